"""Backup policies through the API (P1-P5, B1): every field rule, limit and code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from csbs.domain.identity import Role
from csbs.domain.providers import CSBS_PROVIDER_ID
from csbs.services.inventory import DiskSpec
from tests.support.runtime import Env

PATTERN = (
    "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


class Api:
    def __init__(self, env: Env, token: str, pid: str) -> None:
        self.env, self.token, self.pid = env, token, pid

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        return self.env.client.request(
            method,
            f"/v1/{self.pid}{path}",
            json=body,
            headers={"X-Auth-Token": token or self.token},
        )

    def server(self, name: str) -> str:
        root = self.env.runtime.settings.effective_inventory_roots[0]
        root.mkdir(parents=True, exist_ok=True)
        path = Path(root) / f"{self.pid[:8]}-{name}.img"
        with open(path, "wb") as f:
            f.truncate(1 << 20)
        return str(self.env.services.inventory.add_server(self.pid, name, [DiskSpec(str(path))]).id)


@pytest.fixture
def api(env: Env) -> Api:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    return Api(env, token, env.project_id("alpha"))


def body(name: str = "daily", resources: list[dict[str, Any]] | None = None, **op: Any) -> Any:
    operation: dict[str, Any] = {
        "enabled": True,
        "operation_type": "backup",
        "operation_definition": {"max_backups": 20, "retention_duration_days": -1},
        "trigger": {"properties": {"pattern": PATTERN}},
    }
    operation.update(op)
    return {
        "policy": {
            "name": name,
            "description": "nightly",
            "provider_id": CSBS_PROVIDER_ID,
            "parameters": {"common": {}},
            "resources": resources or [],
            "scheduled_operations": [operation],
        }
    }


def res(server_id: str, name: str = "s") -> dict[str, Any]:
    return {"id": server_id, "type": "OS::Nova::Server", "name": name}


def test_create_show_update_delete(api: Api) -> None:
    s1, s2 = api.server("web1"), api.server("web2")
    r = api.call("POST", "/policies", body(resources=[res(s1, "web1")]))
    assert r.status_code == 200, r.text
    p = r.json()["policy"]
    assert p["status"] == "suspended"
    assert p["name"] == "daily" and p["provider_id"] == CSBS_PROVIDER_ID
    assert p["resources"] == [
        {"id": s1, "type": "OS::Nova::Server", "name": "web1", "extra_info": {}}
    ]
    op = p["scheduled_operations"][0]
    assert op["enabled"] is True and op["operation_type"] == "backup"
    # Numbers as strings (the old Go SDK needs them), plan and provider filled in.
    assert op["operation_definition"] == {
        "max_backups": "20",
        "retention_duration_days": "-1",
        "plan_id": p["id"],
        "provider_id": CSBS_PROVIDER_ID,
    }
    assert op["trigger"]["properties"]["pattern"] == PATTERN
    assert op["trigger"]["type"] == "time" and op["trigger_id"] == op["trigger"]["id"]
    assert api.call("GET", f"/policies/{p['id']}").json()["policy"] == p

    # P4: resources replace the servers; the operation carries its id; extras are ignored.
    update = {
        "policy": {
            "name": "renamed",
            "parameters": {"common": {"x": "y"}},
            "resources": [res(s2, "web2")],
            "scheduled_operations": [
                {
                    "id": op["id"],
                    "trigger_id": "ignored",
                    "enabled": False,
                    "operation_definition": {"max_backups": "3", "permanent": "False"},
                }
            ],
        }
    }
    r = api.call("PUT", f"/policies/{p['id']}", update)
    assert r.status_code == 200, r.text
    u = r.json()["policy"]
    assert u["name"] == "renamed" and [x["id"] for x in u["resources"]] == [s2]
    assert u["status"] == "disabled"
    assert u["scheduled_operations"][0]["enabled"] is False
    assert u["scheduled_operations"][0]["operation_definition"]["max_backups"] == "3"
    assert u["scheduled_operations"][0]["operation_definition"]["permanent"] is False
    assert u["scheduled_operations"][0]["trigger"]["properties"]["pattern"] == PATTERN
    # s1 is free again: another policy may take it.
    assert api.call("POST", "/policies", body("other", [res(s1)])).status_code == 200

    assert api.call("DELETE", f"/policies/{p['id']}").status_code == 200
    r = api.call("GET", f"/policies/{p['id']}")
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3000"
    assert api.call("DELETE", f"/policies/{p['id']}").json()["error_code"] == "CSBS.3000"


def _with(path: str, value: Any) -> Any:
    b = body()
    target = b["policy"]
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target[k]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return b


BAD = [
    ("name", "has space", "CSBS.9001"),
    ("name", "", "CSBS.9001"),
    ("name", "x" * 256, "CSBS.9001"),
    ("description", "a<b", "CSBS.9001"),
    ("description", "x" * 256, "CSBS.9001"),
    ("provider_id", "nope", "CSBS.9001"),
    ("scheduled_operations", [], "CSBS.9001"),
    ("scheduled_operations.0.operation_type", "restore", "CSBS.9001"),
    ("scheduled_operations.0.enabled", KeyError, "CSBS.9001"),
    ("scheduled_operations.0.name", "bad name", "CSBS.9001"),
    ("scheduled_operations.0.operation_definition.max_backups", 100000, "CSBS.9001"),
    ("scheduled_operations.0.operation_definition.max_backups", -2, "CSBS.9001"),
    ("scheduled_operations.0.operation_definition.max_backups", "many", "CSBS.9001"),
    ("scheduled_operations.0.operation_definition.permanent", "maybe", "CSBS.9001"),
    ("scheduled_operations.0.operation_definition.day_backups", 5, "CSBS.9001"),  # no timezone
    ("scheduled_operations.0.operation_definition.week_backups", 101, "CSBS.9001"),
    ("scheduled_operations.0.trigger.properties.pattern", "not ical", "CSBS.9001"),
    ("scheduled_operations.0.trigger.properties.pattern", "B" * 10241, "CSBS.9001"),
    ("scheduled_operations.0.trigger.properties.timezone", "Mars/Base", "CSBS.9001"),
    ("resources", [{"id": "x", "type": "OS::Cinder::Volume", "name": "v"}], "CSBS.6003"),
    ("resources", [res("no-such-server")], "CSBS.6000"),
    ("resources", [res(f"id-{i}") for i in range(65)], "CSBS.9001"),
]


@pytest.mark.parametrize(("path", "value", "code"), BAD)
def test_create_refuses(api: Api, path: str, value: Any, code: str) -> None:
    r = api.call("POST", "/policies", _with(path, value))
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == code
    assert api.call("GET", "/policies").json()["policies"] == []


@pytest.mark.parametrize(
    ("rrule", "problem"),
    [
        ("FREQ=HOURLY;BYHOUR=1", "FREQ must be DAILY or WEEKLY"),
        ("FREQ=MONTHLY;BYHOUR=1", "FREQ must be DAILY or WEEKLY"),
        ("FREQ=DAILY;BYHOUR=1;BYMINUTE=0,30", "30 minutes apart"),
        ("FREQ=DAILY;BYHOUR=0,23;BYMINUTE=0", "60 minutes"),  # 23:00 -> 00:00 is fine ...
        ("FREQ=DAILY;BYHOUR=0,23;BYMINUTE=10,40", "30 minutes apart"),
        ("FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=23,0;BYMINUTE=30", ""),  # Mon 23:30 -> Tue 00:30
        ("FREQ=WEEKLY;BYDAY=XX;BYHOUR=1", "BYDAY"),
        ("FREQ=DAILY;BYHOUR=24", "BYHOUR"),
        ("FREQ=DAILY;BYHOUR=1;COUNT=3", "COUNT is not supported"),
        ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=1", "INTERVAL is supported with FREQ=DAILY"),
    ],
)
def test_schedule_rules(api: Api, rrule: str, problem: str) -> None:
    pattern = f"BEGIN:VCALENDAR\nBEGIN:VEVENT\nRRULE:{rrule}\nEND:VEVENT\nEND:VCALENDAR\n"
    r = api.call(
        "POST", "/policies", _with("scheduled_operations.0.trigger.properties.pattern", pattern)
    )
    if problem in ("", "60 minutes"):
        assert r.status_code == 200, r.text  # exactly one hour apart, across midnight: allowed
    else:
        assert r.status_code == 400, r.text
        assert r.json()["error_code"] == "CSBS.9001"
        assert problem in r.json()["error_msg"]


def test_more_than_24_runs_a_day_refused(api: Api) -> None:
    hours = ",".join(str(h) for h in range(24))
    ok = (
        f"BEGIN:VCALENDAR\nBEGIN:VEVENT\nRRULE:FREQ=DAILY;BYHOUR={hours}\nEND:VEVENT\nEND:VCALENDAR"
    )
    r = api.call(
        "POST", "/policies", _with("scheduled_operations.0.trigger.properties.pattern", ok)
    )
    assert r.status_code == 200, r.text
    # 48 runs: fails on the count before the gaps.
    too_many = ok.replace("RRULE:FREQ=DAILY;", "RRULE:FREQ=DAILY;BYMINUTE=0,30;")
    b = _with("scheduled_operations.0.trigger.properties.pattern", too_many)
    b["policy"]["name"] = "other"
    r = api.call("POST", "/policies", b)
    assert r.status_code == 400 and "48 times a day" in r.json()["error_msg"]


def test_limits_and_uniqueness(api: Api, env: Env) -> None:
    s1 = api.server("web1")
    assert api.call("POST", "/policies", body("a", [res(s1)])).status_code == 200
    r = api.call("POST", "/policies", body("a"))
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9007"
    r = api.call("POST", "/policies", body("b", [res(s1)]))
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6004"
    for i in range(31):
        assert api.call("POST", "/policies", body(f"p{i}")).status_code == 200
    r = api.call("POST", "/policies", body("p32"))
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.0001"
    # Another project's server is not found (no existence leak), its policies unaffected.
    beta = env.add_user("bo", "beta", Role.MEMBER)
    b = Api(env, beta, env.project_id("beta"))
    r = b.call("POST", "/policies", body("a", [res(s1)]))
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6000"
    assert b.call("POST", "/policies", body("a")).status_code == 200  # names are per project


def test_update_rules(api: Api) -> None:
    s1, s2 = api.server("web1"), api.server("web2")
    p1 = api.call("POST", "/policies", body("one", [res(s1)])).json()["policy"]
    api.call("POST", "/policies", body("two", [res(s2)]))
    path = f"/policies/{p1['id']}"
    op_id = p1["scheduled_operations"][0]["id"]
    cases = [
        ({"scheduled_operations": [{"enabled": False}]}, "CSBS.9001"),  # no id
        ({"scheduled_operations": [{"id": "other", "enabled": False}]}, "CSBS.9001"),
        ({"name": "two"}, "CSBS.9007"),
        ({"resources": [res(s2)]}, "CSBS.6004"),
        (
            {"scheduled_operations": [{"id": op_id, "trigger": {"properties": {"pattern": "x"}}}]},
            "CSBS.9001",
        ),
    ]
    for change, code in cases:
        r = api.call("PUT", path, {"policy": change})
        assert r.status_code == 400 and r.json()["error_code"] == code, (change, r.text)
    # Nothing of the refused updates stuck.
    assert api.call("GET", path).json()["policy"] == p1
    r = api.call("PUT", "/policies/nope", {"policy": {"name": "x"}})
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3000"


def test_list_paging_sort_name(api: Api, env: Env) -> None:
    for name in ("c", "a", "b"):
        assert api.call("POST", "/policies", body(name)).status_code == 200
        env.clock.advance(1)
    names = [p["name"] for p in api.call("GET", "/policies").json()["policies"]]
    assert names == ["b", "a", "c"]  # newest first
    r = api.call("GET", "/policies?sort=name:asc&limit=2").json()
    assert [p["name"] for p in r["policies"]] == ["a", "b"]
    assert "marker=" in r["policies_links"][0]["href"]
    marker = r["policies"][-1]["id"]
    r = api.call("GET", f"/policies?sort=name:asc&limit=2&marker={marker}").json()
    assert [p["name"] for p in r["policies"]] == ["c"] and "policies_links" not in r
    assert [p["name"] for p in api.call("GET", "/policies?name=a").json()["policies"]] == ["a"]
    assert api.call("GET", "/policies?name=").json()["policies"] == []  # exact match
    assert api.call("GET", "/policies?sort=bogus").status_code == 400
    assert api.call("GET", "/policies?all_tenants=true").status_code == 403


def test_roles_and_isolation(api: Api, env: Env) -> None:
    p = api.call("POST", "/policies", body()).json()["policy"]
    reader = env.add_user("rob", "alpha", Role.READER)
    assert api.call("GET", f"/policies/{p['id']}", token=reader).status_code == 200
    assert api.call("POST", "/policies", body("x"), token=reader).status_code == 403
    assert api.call("DELETE", f"/policies/{p['id']}", token=reader).status_code == 403
    beta = env.add_user("bo", "beta", Role.MEMBER)
    b = Api(env, beta, env.project_id("beta"))
    assert b.call("GET", f"/policies/{p['id']}").status_code == 404
    assert b.call("DELETE", f"/policies/{p['id']}").status_code == 404
    assert api.call("GET", f"/policies/{p['id']}").status_code == 200


def test_execute_now(api: Api, env: Env) -> None:
    s1, s2 = api.server("web1"), api.server("web2")
    p = api.call("POST", "/policies", body(resources=[res(s1), res(s2)])).json()["policy"]
    path = f"/providers/{CSBS_PROVIDER_ID}/checkpoints"
    r = api.call("POST", path, {"checkpoint": {"plan_id": p["id"], "parameters": {}}})
    assert r.status_code == 200, r.text
    cp = r.json()["checkpoint"]
    assert cp["status"] == "protecting"
    assert cp["protection_plan"]["id"] == p["id"] and cp["protection_plan"]["name"] == "daily"
    assert sorted(x["id"] for x in cp["protection_plan"]["resources"]) == sorted([s1, s2])
    items = api.call("GET", f"/checkpoint_items?checkpoint_id={cp['id']}").json()
    assert sorted(i["resource_id"] for i in items["checkpoint_items"]) == sorted([s1, s2])
    assert all(i["status"] == "protecting" for i in items["checkpoint_items"])
    # Again while its backups run: the policy is executing.
    r = api.call("POST", path, {"checkpoint": {"plan_id": p["id"], "parameters": {}}})
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.2004"
    # Unknown policy, a policy with no server, a server not in the policy.
    r = api.call("POST", path, {"checkpoint": {"plan_id": "nope", "parameters": {}}})
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3000"
    empty = api.call("POST", "/policies", body("empty")).json()["policy"]
    r = api.call("POST", path, {"checkpoint": {"plan_id": empty["id"], "parameters": {}}})
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6032"
    s3 = api.server("web3")
    lone = api.call("POST", "/policies", body("lone", [res(s3)])).json()["policy"]
    r = api.call(
        "POST",
        path,
        {"checkpoint": {"plan_id": lone["id"], "parameters": {"resources": [s1]}}},
    )
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    # Karbor's body (extra-info, no parameters) and a subset of servers.
    r = api.call(
        "POST",
        path,
        {"checkpoint": {"plan_id": lone["id"], "extra-info": None}},
    )
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["checkpoint"]["protection_plan"]["resources"]] == [s3]
    r = api.call("POST", path.replace(CSBS_PROVIDER_ID, "other"), {"checkpoint": {"plan_id": "x"}})
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"


def test_policy_delete_keeps_its_backups(api: Api) -> None:
    s1 = api.server("web1")
    p = api.call("POST", "/policies", body(resources=[res(s1)])).json()["policy"]
    path = f"/providers/{CSBS_PROVIDER_ID}/checkpoints"
    cp = api.call("POST", path, {"checkpoint": {"plan_id": p["id"]}}).json()["checkpoint"]
    assert api.call("DELETE", f"/policies/{p['id']}").status_code == 200
    items = api.call("GET", f"/checkpoint_items?checkpoint_id={cp['id']}").json()
    assert len(items["checkpoint_items"]) == 1


def test_quota_refuses_execute_and_policy_tags_reach_backups(api: Api, env: Env) -> None:
    s1, s2 = api.server("web1"), api.server("web2")
    b = body(resources=[res(s1), res(s2)])
    b["policy"]["tags"] = [{"key": "team", "value": "web"}, {"key": "tier", "value": ""}]
    p = api.call("POST", "/policies", b).json()["policy"]
    assert p["tags"] == [{"key": "team", "value": "web"}, {"key": "tier", "value": ""}]
    tags = api.call("GET", f"/csbs_backup_policy/{p['id']}/tags").json()["tags"]
    assert sorted(t["key"] for t in tags) == ["team", "tier"]
    path = f"/providers/{CSBS_PROVIDER_ID}/checkpoints"
    env.services.quotas.set(api.pid, backups=1)
    r = api.call("POST", path, {"checkpoint": {"plan_id": p["id"]}})
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9006", r.text
    assert api.call("GET", "/checkpoint_items").json()["checkpoint_items"] == []
    env.services.quotas.set(api.pid, backups=2)
    cp = api.call("POST", path, {"checkpoint": {"plan_id": p["id"]}}).json()["checkpoint"]
    items = api.call("GET", f"/checkpoint_items?checkpoint_id={cp['id']}").json()
    assert len(items["checkpoint_items"]) == 2
    for item in items["checkpoint_items"]:
        assert sorted((t["key"], t["value"]) for t in item["tags"]) == [
            ("team", "web"),
            ("tier", ""),
        ]


MAX_BACKUPS = "scheduled_operations.0.operation_definition.max_backups"
PATTERN_PATH = "scheduled_operations.0.trigger.properties.pattern"
ODD = [
    ("GET", "/policies?limit=99999999999999999999", None),
    ("GET", "/policies?offset=99999999999999999999", None),
    ("POST", "/policies", _with(MAX_BACKUPS, "9" * 5000)),
    ("POST", "/policies", _with(PATTERN_PATH, PATTERN.replace("=12", "=\u00b2"))),
    ("POST", "/policies", _with(PATTERN_PATH, PATTERN.replace("=12", "=" + "1" * 5000))),
    ("POST", "/policies", _with("resources", [res("x\u0000")])),
    ("POST", f"/providers/{CSBS_PROVIDER_ID}/checkpoints", {"checkpoint": {"plan_id": "x\0"}}),
]


@pytest.mark.parametrize(("method", "path", "payload"), ODD)
def test_odd_values_get_a_4xx_not_a_500(api: Api, method: str, path: str, payload: Any) -> None:
    r = api.call(method, path, payload)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error_code"].startswith("CSBS.")


@pytest.mark.parametrize("path", ["/policies?name=%00", "/policies/%00", "/policies/x%00y"])
def test_nul_characters_never_give_a_500(api: Api, path: str) -> None:
    # PostgreSQL cannot hold NUL in text (400 CSBS.9001); SQLite simply finds nothing.
    r = api.call("GET", path)
    assert r.status_code in (200, 400, 404), r.text
    if r.status_code != 200:
        assert r.json()["error_code"] in ("CSBS.9001", "CSBS.3000")


def test_schedule_preview_shows_the_next_runs_in_the_zone(api: Api) -> None:
    # The clock stands at Thursday 2026-01-01 00:00 UTC.
    preview = {"schedule": {"pattern": PATTERN, "count": 3}}
    r = api.call("POST", "/policies/schedule_preview", preview)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "next_runs": [
            "2026-01-01T12:27:00.000000",
            "2026-01-08T12:27:00.000000",
            "2026-01-15T12:27:00.000000",
        ],
        "timezone": "UTC",
    }
    preview["schedule"]["timezone"] = "Europe/Berlin"
    r = api.call("POST", "/policies/schedule_preview", preview)
    assert r.json()["next_runs"][0] == "2026-01-01T11:27:00.000000"
    assert r.json()["timezone"] == "Europe/Berlin"
    # What a policy would refuse is refused here, in the same words.
    r = api.call(
        "POST",
        "/policies/schedule_preview",
        {"schedule": {"pattern": PATTERN.replace("BYHOUR=12", "BYHOUR=25")}},
    )
    assert r.status_code == 400
    assert r.json()["error_code"] == "CSBS.9001"
    assert "BYHOUR" in r.json()["error_msg"]
    r = api.call(
        "POST", "/policies/schedule_preview", {"schedule": {"pattern": PATTERN, "timezone": "Mars"}}
    )
    assert r.status_code == 400 and "timezone" in r.json()["error_msg"]


def test_schedule_preview_of_a_policy_counts_its_days_from_its_creation(api: Api) -> None:
    every_3_days = PATTERN.replace(
        "FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27", "FREQ=DAILY;INTERVAL=3;BYHOUR=1;BYMINUTE=0"
    )
    p = api.call(
        "POST", "/policies", body(trigger={"properties": {"pattern": every_3_days}})
    ).json()["policy"]
    api.env.clock.advance(86400)  # a day later: a new policy would count from today
    api.token = api.env.token("mia", "pw-" + "x" * 8, "alpha")  # the first one has expired
    preview = {"schedule": {"pattern": every_3_days, "count": 2, "policy_id": p["id"]}}
    r = api.call("POST", "/policies/schedule_preview", preview)
    assert r.status_code == 200, r.text
    assert r.json()["next_runs"] == ["2026-01-04T01:00:00.000000", "2026-01-07T01:00:00.000000"]
    assert p["next_run_at"] == "2026-01-01T01:00:00.000000"
    del preview["schedule"]["policy_id"]
    r = api.call("POST", "/policies/schedule_preview", preview)
    assert r.json()["next_runs"] == ["2026-01-02T01:00:00.000000", "2026-01-05T01:00:00.000000"]


def test_a_reader_may_preview_but_another_project_may_not(api: Api) -> None:
    reader = api.env.add_user("rita", "alpha", Role.READER)
    preview = {"schedule": {"pattern": PATTERN}}
    r = api.call("POST", "/policies/schedule_preview", preview, token=reader)
    assert r.status_code == 200 and len(r.json()["next_runs"]) == 5
    other = api.env.add_user("olaf", "beta", Role.MEMBER)
    r = api.call("POST", "/policies/schedule_preview", preview, token=other)
    assert r.status_code == 403


def test_runs_list_the_policys_firings_and_skips(api: Api) -> None:
    s1 = api.server("web1")
    p = api.call("POST", "/policies", body(resources=[res(s1, "web1")])).json()["policy"]
    assert api.call("GET", f"/policies/{p['id']}/runs").json() == {"runs": []}
    r = api.call(
        "POST",
        f"/providers/{CSBS_PROVIDER_ID}/checkpoints",
        {"checkpoint": {"plan_id": p["id"], "parameters": {}}},
    )
    assert r.status_code == 200, r.text
    (run,) = api.call("GET", f"/policies/{p['id']}/runs").json()["runs"]
    assert run["trigger"] == "manual"
    assert run["checkpoint_id"] == r.json()["checkpoint"]["id"]
    assert run["skipped"] == []
    assert api.call("GET", "/policies/nope/runs").status_code == 404


def test_full_read_option_makes_the_policys_backups_full(api: Api, env: Env) -> None:
    """`parameters.common.full_read`: the policy's backups read every disk (they are full,
    `incremental` false), also image files unchanged since the previous backup."""
    import datetime as dt

    from csbs.db.queries import backups as backup_q
    from csbs.domain.backups import BackupStatus

    s1 = api.server("web1")
    p = api.call("POST", "/policies", body(resources=[res(s1)])).json()["policy"]
    path = f"/providers/{CSBS_PROVIDER_ID}/checkpoints"

    def execute() -> dict[str, Any]:
        env.clock.advance(60)  # a manual run is one slot of its own
        r = api.call("POST", path, {"checkpoint": {"plan_id": p["id"], "parameters": {}}})
        assert r.status_code == 200, r.text
        cp = r.json()["checkpoint"]["id"]
        (item,) = api.call("GET", f"/checkpoint_items?checkpoint_id={cp}").json()[
            "checkpoint_items"
        ]
        with env.services.db.write() as s:  # as if a worker had finished it
            backup_q.set_status(
                s, item["id"], BackupStatus.AVAILABLE, dt.datetime.now(dt.UTC), progress=100
            )
        return dict(item)

    assert execute()["extend_info"]["incremental"] is False  # the first is always full
    assert execute()["extend_info"]["incremental"] is True
    for bad in ("yes", 3, {"x": 1}):
        r = api.call(
            "PUT",
            f"/policies/{p['id']}",
            {"policy": {"parameters": {"common": {"full_read": bad}}}},
        )
        assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", r.text
    r = api.call(
        "PUT", f"/policies/{p['id']}", {"policy": {"parameters": {"common": {"full_read": "true"}}}}
    )
    assert r.status_code == 200, r.text
    assert execute()["extend_info"]["incremental"] is False
