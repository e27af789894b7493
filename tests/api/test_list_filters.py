"""Every list route of the OpenAPI document, with each query parameter it documents, against
a reference computed from the seeded data (spec §11.18).

A filter or sort that the service accepted but ignored answers the unfiltered list, so each
case also checks that its reference differs from that list: an ignored parameter fails.
A route or parameter added without a case here fails too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from csbs.db import tables
from csbs.db.queries import restores as restore_q
from csbs.domain.backups import BackupStatus
from csbs.domain.identity import Role
from csbs.domain.ids import new_id
from csbs.domain.restores import Restore, RestoreStatus, VolumeMapping
from csbs.queue import EnqueueRequest
from csbs.queue.jobs import Refs
from csbs.queue.schema import tasks as tasks_table
from tests.support.runtime import Env
from tests.support.seed import EPOCH, seed_backup, seed_policy

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
DAY = dt.timedelta(days=1)

#: query parameters every list answers the same way: paging, sorting, tenancy
ROOT = Path(__file__).resolve().parents[2]
#: Routes that show one resource and take only `all_tenants`, with the test that checks it.
ONE_RESOURCE = {
    "/v1/{project_id}/servers/{server_id}": (
        "tests/api/test_servers.py::test_an_admin_shows_any_projects_server_with_all_tenants"
    ),
    "/v1/{project_id}/operation_logs/{operation_log_id}": (
        "tests/api/test_operation_logs.py::test_an_admin_shows_any_projects_task_with_all_tenants"
    ),
}
PAGING = {"limit", "marker", "offset", "sort", "sort_key", "sort_dir", "all_tenants", "project_id"}


@dataclasses.dataclass
class Row:
    id: str
    project: str
    attrs: dict[str, Any]


Predicate = Callable[[Row], bool]


@dataclasses.dataclass
class ListSpec:
    #: the key of the answer's list (or "count")
    key: str
    rows: list[Row]
    #: parameter -> the values tried and which rows each keeps
    filters: dict[str, list[tuple[str, Predicate]]]
    sort_keys: tuple[str, ...] = ()
    default_sort: tuple[str, bool] = ("created_at", True)
    #: parameters documented as meaning nothing (they must still be accepted)
    inert: frozenset[str] = frozenset()
    #: whether the rows are the same in every project (the provider)
    global_rows: bool = False
    #: what breaks ties after the sort keys (the queue's lists: the order of enqueueing)
    tiebreak: str = "id"


def _ordered(rows: list[Row], key: str, desc: bool, tiebreak: str = "id") -> list[Row]:
    """The service's order: NULL lowest, then the tiebreak in the same direction."""
    asc = sorted(
        rows,
        key=lambda r: (
            r.attrs[key] is not None,
            r.attrs[key] if r.attrs[key] is not None else 0,
            r.attrs[tiebreak],
        ),
    )
    return list(reversed(asc)) if desc else asc


def _ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


class World:
    """Two projects' backups, records, policies, restores and tasks, all told apart by
    their attributes, and the reference of every list."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.token = env.admin_token()
        env.add_user("mia", "alpha", Role.MEMBER)
        env.add_user("bob", "beta", Role.MEMBER)
        self.pid = env.project_id("alpha")
        self.other = env.project_id("beta")
        s = env.services
        self.policies: list[Row] = []
        for i, (project, enabled) in enumerate(
            [(self.pid, True), (self.pid, False), (self.pid, False), (self.other, True)]
        ):
            at = EPOCH + i * dt.timedelta(hours=3)
            pid = seed_policy(s, project, f"plan-{i}", created_at=at)
            description = f"about {i % 2}"
            with s.db.write() as session:
                session.execute(
                    sa.update(tables.Policy)
                    .where(tables.Policy.id == pid)
                    .values(
                        description=description,
                        enabled=enabled,
                        updated_at=at + dt.timedelta(hours=10 - i),
                    )
                )
            self.policies.append(
                Row(
                    pid,
                    project,
                    {
                        "created_at": at,
                        "updated_at": at + dt.timedelta(hours=10 - i),
                        "name": f"plan-{i}",
                        "id": pid,
                        "description": description,
                        "enabled": enabled,
                    },
                )
            )
        p0, p1 = self.policies[0].id, self.policies[1].id
        # Three firings of the first policy, newest last (what GET .../runs lists).
        self.runs: list[Row] = []
        for i in range(3):
            fired = EPOCH + i * dt.timedelta(hours=6)
            run_id = new_id()
            with s.db.write() as session:
                session.add(
                    tables.PolicyRun(
                        id=run_id,
                        policy_id=p0,
                        project_id=self.pid,
                        slot_at=fired,
                        fired_at=fired,
                        trigger="schedule",
                        checkpoint_id=None,
                        skipped=[],
                    )
                )
            self.runs.append(Row(run_id, self.pid, {"fired_at": fired, "id": run_id}))
        statuses = [
            BackupStatus.AVAILABLE,
            BackupStatus.ERROR,
            BackupStatus.AVAILABLE,
            BackupStatus.PROTECTING,
            BackupStatus.WAITING_DELETE,
            BackupStatus.AVAILABLE,
        ]
        servers = [new_id() for _ in range(3)]
        self.backups: list[Row] = []
        for i in range(8):
            project = self.pid if i < 6 else self.other
            status = statuses[i] if i < 6 else BackupStatus.AVAILABLE
            at = EPOCH + i * DAY + i * dt.timedelta(minutes=7)
            plan = [p0, p1, None][i % 3]
            b = seed_backup(
                s,
                project,
                f"alpha-{i}" if i < 6 else f"beta-{i}",
                created_at=at,
                server_id=servers[i % 3],
                server_name=f"web{i % 3}",
                plan_id=plan,
                status=status,
            )
            self.backups.append(
                Row(
                    b.id,
                    project,
                    {
                        "created_at": at,
                        "updated_at": b.updated_at,
                        "protected_at": b.protected_at,
                        "name": b.name,
                        "status": status.value,
                        "id": b.id,
                        "resource_id": b.resource_id,
                        "resource_name": b.resource_name,
                        "checkpoint_id": b.checkpoint_id,
                        "plan_id": plan,
                        "record_status": {
                            BackupStatus.PROTECTING: "protecting",
                            BackupStatus.WAITING_DELETE: "deleting",
                            BackupStatus.ERROR: "error",
                        }.get(status, "available"),
                    },
                )
            )
        self.records = [
            Row(
                b.attrs["checkpoint_id"],
                b.project,
                {
                    "created_at": b.attrs["created_at"],
                    "id": b.attrs["checkpoint_id"],
                    "plan_id": b.attrs["plan_id"],
                    "status": b.attrs["record_status"],
                },
            )
            for b in self.backups
        ]
        self.restores: list[Row] = []
        restore_statuses = [
            RestoreStatus.SUCCESS,
            RestoreStatus.FAIL,
            RestoreStatus.IN_PROGRESS,
            RestoreStatus.SUCCESS,
            RestoreStatus.SUCCESS,
        ]
        for i, status in enumerate(restore_statuses):
            project = self.pid if i < 4 else self.other
            at = EPOCH + i * dt.timedelta(hours=5)
            ended = None if status is RestoreStatus.IN_PROGRESS else at + (5 - i) * DAY
            r = Restore(
                id=new_id(),
                project_id=project,
                provider_id=PROVIDER,
                checkpoint_id=self.backups[i].attrs["checkpoint_id"],
                backup_id=self.backups[i].id,
                server_id=self.backups[i].attrs["resource_id"],
                power_on=False,
                restore_target=None,
                mappings=(VolumeMapping("vb", "vol"),),
                status=status,
                reason="",
                task_id=None,
                created_at=at,
                ended_at=ended,
            )
            with s.db.write() as session:
                restore_q.add(session, r)
            self.restores.append(
                Row(
                    r.id,
                    project,
                    {"created_at": at, "ended_at": ended, "status": status.value, "id": r.id},
                )
            )
        self.tasks: list[Row] = []
        kinds = [
            ("backup", "success"),
            ("backup", "failed"),
            ("delete", "success"),
            ("restore", "running"),
            ("delete", "waiting"),
            ("backup", "waiting"),
            ("backup", "success"),
        ]
        for i, (kind, status) in enumerate(kinds):
            project = self.pid if i < 6 else self.other
            env.clock.advance(3600)
            at = env.clock.now()
            b = self.backups[i]
            task = s.tasks.enqueue_one(
                EnqueueRequest(
                    project,
                    kind,
                    refs=Refs(
                        provider_id=PROVIDER,
                        checkpoint_id=b.attrs["checkpoint_id"],
                        checkpoint_item_id=b.id,
                        plan_id=b.attrs["plan_id"],
                        resource_id=b.attrs["resource_id"],
                    ),
                )
            )
            started = None if status == "waiting" else at + (7 - i) * dt.timedelta(minutes=1)
            ended = (
                at + (9 - i) * dt.timedelta(hours=1) if status in ("success", "failed") else None
            )
            with s.db.write() as session:
                session.execute(
                    sa.update(tasks_table)
                    .where(tasks_table.c.id == task.id)
                    .values(status=status, started_at=started, ended_at=ended)
                )
            self.tasks.append(
                Row(
                    task.id,
                    project,
                    {
                        "created_at": at,
                        "started_at": started,
                        "ended_at": ended,
                        "status": status,
                        "operation_type": kind,
                        "id": task.id,
                        "seq": i,
                        "checkpoint_id": b.attrs["checkpoint_id"],
                        "checkpoint_item_id": b.id,
                        "plan_id": b.attrs["plan_id"],
                        "resource_id": b.attrs["resource_id"],
                    },
                )
            )

    def specs(self) -> dict[str, ListSpec]:
        b0 = self.backups[0].attrs
        t0 = self.tasks[0].attrs
        p0 = self.policies[0].id
        day3 = EPOCH + 3 * DAY

        def attr(name: str, value: Any) -> Predicate:
            return lambda r: r.attrs[name] == value

        def none(_r: Row) -> bool:
            return False

        def every(_r: Row) -> bool:
            return True

        backup_filters: dict[str, list[tuple[str, Predicate]]] = {
            "status": [
                ("error", attr("status", "error")),
                ("available", attr("status", "available")),
            ],
            "name": [("ha-1", attr("name", "alpha-1")), ("alpha", every)],
            "az": [(self.env.runtime.edge.options.region, every), ("elsewhere", none)],
            "resource_id": [(b0["resource_id"], attr("resource_id", b0["resource_id"]))],
            "resource_name": [("eb1", attr("resource_name", "web1"))],
            "start_time": [(_ts(day3), lambda r: r.attrs["created_at"] >= day3)],
            "end_time": [(_ts(day3), lambda r: r.attrs["created_at"] <= day3)],
            "image_type": [("backup", every), ("snapshot", none)],
            "policy_id": [(p0, attr("plan_id", p0))],
            "checkpoint_id": [(b0["checkpoint_id"], attr("checkpoint_id", b0["checkpoint_id"]))],
            "resource_type": [("OS::Nova::Server", every), ("OS::Cinder::Volume", none)],
            "ip": [("10.0.0.1", none)],
            "dec": [("true", every)],
        }
        backup_sorts = ("created_at", "updated_at", "name", "status", "protected_at", "id")
        return {
            "/v1/{project_id}/checkpoint_items": ListSpec(
                "checkpoint_items",
                self.backups,
                backup_filters,
                backup_sorts,
                inert=frozenset({"dec"}),
            ),
            "/v1/{project_id}/checkpoint_items/count": ListSpec(
                "count", self.backups, backup_filters, inert=frozenset({"dec"})
            ),
            "/v1/{project_id}/providers/{provider_id}/checkpoints": ListSpec(
                "checkpoints",
                self.records,
                {
                    "plan_id": [(p0, attr("plan_id", p0)), ("nope", none)],
                    "start_date": [
                        ("2026-01-04", lambda r: r.attrs["created_at"] >= EPOCH + 3 * DAY)
                    ],
                    "end_date": [
                        # a bare date takes in its whole day
                        ("2026-01-04", lambda r: r.attrs["created_at"] < EPOCH + 4 * DAY),
                        (_ts(day3), lambda r: r.attrs["created_at"] <= day3),
                    ],
                    "status": [
                        (s, attr("status", s))
                        for s in ("available", "error", "protecting", "deleting", "deleted")
                    ],
                },
                ("created_at", "id"),
            ),
            "/v1/{project_id}/restores": ListSpec(
                "restores",
                self.restores,
                {"status": [(s.value, attr("status", s.value)) for s in RestoreStatus]},
                ("created_at", "ended_at", "status", "id"),
            ),
            "/v1/{project_id}/policies": ListSpec(
                "policies",
                self.policies,
                {"name": [("plan-1", attr("name", "plan-1")), ("plan", none)]},
                ("created_at", "updated_at", "name", "id"),
            ),
            "/v1/{project_id}/policies/{policy_id}/runs": ListSpec(
                "runs", self.runs, {}, default_sort=("fired_at", True)
            ),
            "/v1/{project_id}/plans": ListSpec(
                "plans",
                self.policies,
                {
                    "name": [("plan-2", attr("name", "plan-2"))],
                    "description": [("about 1", attr("description", "about 1"))],
                    "status": [
                        ("started", attr("enabled", True)),
                        ("suspended", attr("enabled", False)),
                    ],
                },
                ("created_at", "updated_at", "name", "id"),
            ),
            "/v1/{project_id}/operation_logs": ListSpec(
                "operation_logs",
                self.tasks,
                {
                    "operation_type": [
                        ("backup", attr("operation_type", "backup")),
                        ("protect", attr("operation_type", "backup")),
                        ("restore", attr("operation_type", "restore")),
                    ],
                    "status": [
                        ("waiting", attr("status", "waiting")),
                        ("failed", attr("status", "failed")),
                        ("error", attr("status", "failed")),
                        (
                            "available",
                            lambda r: (
                                (r.attrs["status"], r.attrs["operation_type"])
                                == ("success", "backup")
                            ),
                        ),
                        (
                            "deleted",
                            lambda r: (
                                (r.attrs["status"], r.attrs["operation_type"])
                                == ("success", "delete")
                            ),
                        ),
                    ],
                    "checkpoint_id": [
                        (t0["checkpoint_id"], attr("checkpoint_id", t0["checkpoint_id"]))
                    ],
                    "checkpoint_item_id": [
                        (
                            t0["checkpoint_item_id"],
                            attr("checkpoint_item_id", t0["checkpoint_item_id"]),
                        )
                    ],
                    "plan_id": [(p0, attr("plan_id", p0))],
                    "resource_id": [(t0["resource_id"], attr("resource_id", t0["resource_id"]))],
                    "start_time": [
                        (
                            _ts(self.tasks[2].attrs["created_at"]),
                            lambda r: r.attrs["created_at"] >= self.tasks[2].attrs["created_at"],
                        )
                    ],
                    "end_time": [
                        (
                            _ts(self.tasks[2].attrs["created_at"]),
                            lambda r: r.attrs["created_at"] <= self.tasks[2].attrs["created_at"],
                        )
                    ],
                },
                ("created_at", "started_at", "ended_at", "status", "operation_type", "id"),
                tiebreak="seq",
            ),
            "/v1/{project_id}/providers": ListSpec(
                "providers",
                [Row(PROVIDER, "", {"name": "CSBS", "id": PROVIDER, "description": ""})],
                {"name": [("CSBS", every), ("Karbor", none)], "description": [("x", none)]},
                ("id", "name", "description"),
                default_sort=("name", False),
                global_rows=True,
            ),
        }


class Walk:
    def __init__(self, world: World) -> None:
        self.world = world
        self.problems: list[str] = []

    def ask(self, path: str, spec: ListSpec, query: dict[str, str]) -> list[str] | int | None:
        url = (
            path.replace("{project_id}", self.world.pid)
            .replace("{provider_id}", PROVIDER)
            .replace("{policy_id}", self.world.policies[0].id)
        )
        r = self.world.env.client.get(url, params=query, headers={"X-Auth-Token": self.world.token})
        if r.status_code != 200:
            self.problems.append(f"{path} {query}: {r.status_code} {r.text[:200]}")
            return None
        body = r.json()
        if spec.key == "count":
            return int(body["count"])
        return [x["id"] for x in body[spec.key]]

    def check(
        self,
        path: str,
        spec: ListSpec,
        query: dict[str, str],
        expected: list[Row],
        unfiltered: list[Row],
        *,
        must_differ: bool = True,
    ) -> None:
        got = self.ask(path, spec, query)
        if got is None:
            return
        want: list[str] | int = [r.id for r in expected]
        base: list[str] | int = [r.id for r in unfiltered]
        if spec.key == "count":
            assert isinstance(want, list) and isinstance(base, list)
            want, base = len(want), len(base)
        if got != want:
            self.problems.append(f"{path} {query}: got {got}, want {want}")
        if must_differ and want == base:
            self.problems.append(f"{path} {query}: the case cannot tell an ignored parameter")


def test_every_list_honours_every_documented_parameter(env: Env) -> None:
    world = World(env)
    specs = world.specs()
    walk = Walk(world)
    doc = env.client.get("/openapi.json").json()
    walked = 0
    for path, ops in doc["paths"].items():
        op = ops.get("get")
        if op is None:
            continue
        params = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        if not params:
            continue
        if path in ONE_RESOURCE:
            # A route that shows one resource: its only parameter lets an admin name another
            # project's resource; the route's own test (ONE_RESOURCE) checks it end to end.
            assert params == ["all_tenants"], f"{path} {params}: a parameter without a case"
            test_file, test_name = ONE_RESOURCE[path].split("::")
            assert f"def {test_name}(" in (ROOT / test_file).read_text(), ONE_RESOURCE[path]
            walked += 1
            continue
        assert path in specs, f"a list route without a case here: {path} {params}"
        spec = specs[path]
        own = spec.rows if spec.global_rows else [r for r in spec.rows if r.project == world.pid]
        key, desc = spec.default_sort
        default = _ordered(own, key, desc, spec.tiebreak)
        for name in params:
            walked += 1
            if name in spec.filters:
                for value, keep in spec.filters[name]:
                    walk.check(
                        path,
                        spec,
                        {name: value},
                        [r for r in default if keep(r)],
                        default,
                        must_differ=False,
                    )
                # at least one of the values tried must tell an ignored filter
                if name not in spec.inert:
                    assert any(
                        [r.id for r in default if keep(r)] != [r.id for r in default]
                        for _, keep in spec.filters[name]
                    ), f"{path} {name}: no case tells an ignored filter"
            elif name == "all_tenants":
                everyone = _ordered(spec.rows, key, desc, spec.tiebreak)
                walk.check(path, spec, {"all_tenants": "true"}, everyone, default)
            elif name == "project_id":
                theirs = [
                    r
                    for r in _ordered(spec.rows, key, desc, spec.tiebreak)
                    if r.project == world.other
                ]
                walk.check(
                    path, spec, {"all_tenants": "true", "project_id": world.other}, theirs, default
                )
                walk.check(path, spec, {"project_id": world.other}, [], default)
            elif name == "limit":
                walk.check(
                    path, spec, {"limit": "2"}, default[:2], default, must_differ=len(default) > 2
                )
            elif name == "marker":
                walk.check(path, spec, {"marker": default[0].id}, default[1:], default)
            elif name == "offset":
                walk.check(path, spec, {"offset": "1"}, default[1:], default)
            elif name == "sort":
                differs = False
                for sort_key in spec.sort_keys:
                    for direction in ("asc", "desc"):
                        want = _ordered(own, sort_key, direction == "desc", spec.tiebreak)
                        differs = differs or want != default
                        walk.check(
                            path,
                            spec,
                            {"sort": f"{sort_key}:{direction}"},
                            want,
                            default,
                            must_differ=False,
                        )
                assert differs or len(own) < 2, f"{path}: no sort differs from the default"
            elif name == "sort_key":
                for sort_key in spec.sort_keys:
                    walk.check(
                        path,
                        spec,
                        {"sort_key": sort_key},
                        _ordered(own, sort_key, True, spec.tiebreak),
                        default,
                        must_differ=False,
                    )
            elif name == "sort_dir":
                walk.check(
                    path,
                    spec,
                    {"sort_key": key, "sort_dir": "asc" if desc else "desc"},
                    _ordered(own, key, not desc, spec.tiebreak),
                    default,
                    must_differ=len(own) > 1,
                )
            else:
                raise AssertionError(f"{path}: documented parameter {name!r} has no case here")
    assert walked > 60
    assert not walk.problems, "\n".join(walk.problems)


def test_karbor_lists_refuse_what_they_do_not_know(env: Env) -> None:
    token = env.admin_token()
    pid = env.project_id("admin")
    headers = {"X-Auth-Token": token}
    for path in (
        f"/v1/{pid}/providers/{PROVIDER}/checkpoints",
        f"/v1/{pid}/restores",
        f"/v1/{pid}/plans",
        f"/v1/{pid}/operation_logs",
        f"/v1/{pid}/providers",
    ):
        for query in (
            {"plan": "x"},
            {"sort": "nonsense:asc"},
            {"sort": "created_at:sideways"},
            {"sort": "created_at", "sort_key": "id"},
            {"sort_dir": "asc"},
            {"limit": "0"},
            {"marker": "no-such-id"},
        ):
            r = env.client.get(path, params=query, headers=headers)
            assert r.status_code == 400, (path, query, r.text)
            assert r.json()["error_code"] == "CSBS.9001", (path, query)
    bad = {
        f"/v1/{pid}/providers/{PROVIDER}/checkpoints": [
            {"status": "sleeping"},
            {"start_date": "yesterday"},
            {"end_date": "2026-13-01"},
        ],
        f"/v1/{pid}/restores": [{"status": "available"}],
        f"/v1/{pid}/plans": [{"status": "enabled"}],
        f"/v1/{pid}/operation_logs": [{"status": "sleeping"}, {"operation_type": "copy"}],
    }
    for path, queries in bad.items():
        for query in queries:
            r = env.client.get(path, params=query, headers=headers)
            assert r.status_code == 400, (path, query, r.text)
            assert r.json()["error_code"] == "CSBS.9001"
    member = env.add_user("mia", "alpha", Role.MEMBER)
    alpha = env.project_id("alpha")
    for path in ("restores", "plans", f"providers/{PROVIDER}/checkpoints", "operation_logs"):
        r = env.client.get(
            f"/v1/{alpha}/{path}", params={"all_tenants": "1"}, headers={"X-Auth-Token": member}
        )
        assert r.status_code == 403, path
