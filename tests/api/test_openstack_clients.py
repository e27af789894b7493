"""The OpenStack clients from PyPI against a live `csbs serve`: keystoneauth (password and
token methods, the catalog, readable errors) and python-karborclient, as a library and as the
`karbor` command line, over every Karbor call they offer that csbs answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from karborclient import client as karbor_client
from karborclient.common.apiclient import exceptions as karbor_exc
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from tests.support.processes import clean_env, free_port, start_serve, wait_ready

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
PASSWORD = "admin-password-for-clients"
KARBOR = str(Path(sys.executable).parent / "karbor")
OPENSTACK = str(Path(sys.executable).parent / "openstack")
AUTH_FAILED = "The request you have made requires authentication."

pytestmark = pytest.mark.slow


@dataclasses.dataclass
class Live:
    base: str
    data: Path

    @property
    def auth_url(self) -> str:
        return f"{self.base}/v3"

    def password_auth(self, password: str = PASSWORD) -> v3.Password:
        return v3.Password(
            auth_url=self.auth_url,
            username="admin",
            password=password,
            user_domain_id="default",
            project_name="admin",
            project_domain_id="default",
        )

    def openstack(
        self, *args: str, token: str | None = None, password: str = PASSWORD, check: bool = True
    ) -> Any:
        """Run the `openstack` command line with `-f json`; what it printed, parsed (or, for
        a failure that was expected, its output as text)."""
        env = self._env()
        if token is None:
            env.update(OS_USERNAME="admin", OS_PASSWORD=password, OS_USER_DOMAIN_ID="default")
        else:
            env.update(OS_AUTH_TYPE="token", OS_TOKEN=token)
        done = subprocess.run(
            [OPENSTACK, *args, "-f", "json"], capture_output=True, text=True, env=env, timeout=120
        )
        if not check:
            return done.stdout + done.stderr
        assert done.returncode == 0, f"openstack {args}: {done.stdout}\n{done.stderr}"
        return json.loads(done.stdout)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in clean_env().items() if not k.startswith("OS_")}
        env.update(
            OS_AUTH_URL=self.auth_url,
            OS_PROJECT_NAME="admin",
            OS_PROJECT_DOMAIN_ID="default",
            OS_IDENTITY_API_VERSION="3",
        )
        return env

    def karbor(self, *args: str, token: str | None = None, check: bool = True) -> str:
        """Run the `karbor` command line; its standard output."""
        env = {k: v for k, v in clean_env().items() if not k.startswith("OS_")}
        env.update(
            OS_AUTH_URL=self.auth_url, OS_PROJECT_NAME="admin", OS_PROJECT_DOMAIN_ID="default"
        )
        if token is None:
            env.update(OS_USERNAME="admin", OS_PASSWORD=PASSWORD, OS_USER_DOMAIN_ID="default")
            auth: list[str] = []
        else:
            auth = ["--os-auth-token", token]
        done = subprocess.run(
            [KARBOR, *auth, *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check:
            assert done.returncode == 0, f"karbor {args}: {done.stdout}\n{done.stderr}"
        return done.stdout if check else done.stdout + done.stderr


@pytest.fixture
def live(tmp_path: Path, db_url: str) -> Iterator[Live]:
    port = free_port()
    data = tmp_path / "data"
    (data / "disks").mkdir(parents=True)
    serve = start_serve(
        data,
        port,
        log=tmp_path / "serve.log",
        CSBS_ADMIN_PASSWORD=PASSWORD,
        CSBS_DATABASE_URL=db_url,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", serve)
        yield Live(f"http://127.0.0.1:{port}", data)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def _table(text: str) -> list[dict[str, str]]:
    """The rows of a table the command line printed, by column title; a value printed on
    several lines (a row whose first cell is empty continues the one above) joined."""
    lines = [x for x in text.splitlines() if x.startswith("|")]
    cells = [[c.strip() for c in x.strip("|").split("|")] for x in lines]
    if not cells:
        return []
    head, *rows = cells
    out: list[dict[str, str]] = []
    for row in rows:
        if row[0] == "" and out:
            for title, cell in zip(head, row, strict=True):
                if cell:
                    out[-1][title] += "\n" + cell
        else:
            out.append(dict(zip(head, row, strict=True)))
    return out


def _shown(text: str) -> dict[str, str]:
    """A `*-show` answer (Property | Value)."""
    return {row["Property"]: row["Value"] for row in _table(text)}


def _server(live: Live, session: ks_session.Session, name: str) -> str:
    disk = live.data / "disks" / f"{name}.img"
    disk.write_bytes(os.urandom(64 * 1024) + bytes(192 * 1024))
    r = session.post(
        "/servers",
        endpoint_filter={"service_type": "data-protect"},
        json={"server": {"name": name, "disks": [{"path": str(disk)}]}},
    )
    return str(r.json()["server"]["id"])


def _wait_checkpoint(kc: Any, checkpoint_id: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        cp = kc.checkpoints.get(PROVIDER, checkpoint_id)
        if cp.status == "available":
            return
        assert cp.status in ("protecting", "available"), cp.status
        time.sleep(0.2)
    raise AssertionError("the checkpoint did not become available")


def _wait_restore(kc: Any, restore_id: str) -> Any:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = kc.restores.get(restore_id)
        if r.status != "in_progress":
            return r
        time.sleep(0.2)
    raise AssertionError("the restore did not finish")


def test_keystoneauth_password_token_catalog_and_errors(live: Live) -> None:
    auth = live.password_auth()
    session = ks_session.Session(auth=auth)
    token = session.get_token()
    project_id = auth.get_project_id(session)
    assert project_id
    assert (
        session.get_endpoint(service_type="data-protect", interface="public")
        == f"{live.base}/v1/{project_id}"
    )
    assert session.get_endpoint(service_type="identity", interface="public") == live.auth_url
    access = auth.get_access(session)
    assert access.role_names == ["admin"]
    assert access.project_name == "admin"

    # the token method: a new token for the same project, that works
    by_token = v3.Token(
        auth_url=live.auth_url, token=token, project_id=project_id, project_domain_id="default"
    )
    token_session = ks_session.Session(auth=by_token)
    second = token_session.get_token()
    assert second and second != token
    assert by_token.get_access(token_session).expires <= access.expires
    providers = token_session.get(
        "/providers", endpoint_filter={"service_type": "data-protect"}
    ).json()["providers"]
    assert [p["id"] for p in providers] == [PROVIDER]

    # validate and revoke the first token, then the token method refuses it, readably
    checked = httpx2.get(
        f"{live.auth_url}/auth/tokens",
        headers={"X-Auth-Token": second, "X-Subject-Token": token},
    )
    assert checked.status_code == 200
    assert checked.json()["token"]["project"]["id"] == project_id
    revoked = httpx2.delete(
        f"{live.auth_url}/auth/tokens",
        headers={"X-Auth-Token": second, "X-Subject-Token": token},
    )
    assert revoked.status_code == 204
    stale = v3.Token(auth_url=live.auth_url, token=token, project_id=project_id)
    with pytest.raises(ks_exc.Unauthorized) as refused:
        ks_session.Session(auth=stale).get_token()
    assert "revoked" in str(refused.value)

    # a wrong password: keystoneauth shows Keystone's message, not "Unrecognized schema"
    with pytest.raises(ks_exc.Unauthorized) as wrong:
        ks_session.Session(auth=live.password_auth("not-the-password")).get_token()
    assert AUTH_FAILED in str(wrong.value)
    assert "Unrecognized schema" not in str(wrong.value)


def test_karbor_library_and_command_line(live: Live) -> None:
    auth = live.password_auth()
    session = ks_session.Session(auth=auth)
    endpoint = session.get_endpoint(service_type="data-protect", interface="public")
    kc = karbor_client.Client(
        "1", endpoint, session=session, auth=auth, service_type="data-protect"
    )
    web1 = _server(live, session, "web1")
    web2 = _server(live, session, "web2")

    # providers and protectables
    (provider,) = kc.providers.list()
    assert provider.id == PROVIDER and provider.name == "CSBS"
    assert kc.providers.get(PROVIDER).name == "CSBS"
    assert kc.providers.list(search_opts={"name": "Karbor"}) == []
    assert kc.protectables.get_instance("OS::Nova::Server", web1).name == "web1"
    listed = _table(live.karbor("provider-list"))
    assert [(r["Id"], r["Name"]) for r in listed] == [(PROVIDER, "CSBS")]
    assert _shown(live.karbor("provider-show", PROVIDER))["name"] == "CSBS"

    # plans: the library makes one, the command line another
    plan1 = kc.plans.create(
        "lib-plan",
        PROVIDER,
        [{"id": web1, "type": "OS::Nova::Server", "name": "web1"}],
        {},
        description="made by the library",
    )
    assert plan1.status == "suspended"
    assert [r["id"] for r in plan1.resources] == [web1]
    shown = _shown(
        live.karbor("plan-create", "cli-plan", PROVIDER, f"{web2}=OS::Nova::Server=web2")
    )
    plan2 = shown["id"]
    unknown = live.karbor(
        "plan-create", "ghost-plan", PROVIDER, "nope=OS::Nova::Server=ghost", check=False
    )
    assert "The resource: nope can not be found." in unknown
    assert shown["status"] == "suspended" and shown["name"] == "cli-plan"
    assert web2 in shown["resources"]
    assert kc.plans.get(plan2).name == "cli-plan"
    assert [p.id for p in kc.plans.list(search_opts={"name": "lib-plan"})] == [plan1.id]
    started = _shown(live.karbor("plan-update", plan1.id, "--status", "started"))
    assert started["status"] == "started"
    assert [p.id for p in kc.plans.list(search_opts={"status": "started"})] == [plan1.id]
    rows = _table(live.karbor("plan-list", "--status", "suspended"))
    assert [r["Id"] for r in rows] == [plan2]
    renamed = kc.plans.update(plan2, {"name": "cli-plan-2", "description": "renamed"})
    assert renamed.name == "cli-plan-2"
    assert _shown(live.karbor("plan-show", plan2))["description"] == "renamed"
    # the same plans are CSBS policies
    policies = session.get("/policies", endpoint_filter={"service_type": "data-protect"}).json()[
        "policies"
    ]
    assert {p["id"] for p in policies} == {plan1.id, plan2}

    # checkpoints: made by the library and by the command line
    cp1 = kc.checkpoints.create(PROVIDER, plan1.id, {"note": "first"})
    assert cp1.protection_plan["id"] == plan1.id
    cp2 = _shown(live.karbor("checkpoint-create", PROVIDER, plan2))["id"]
    _wait_checkpoint(kc, cp1.id)
    _wait_checkpoint(kc, cp2)
    cp3 = kc.checkpoints.create(PROVIDER, plan1.id).id
    _wait_checkpoint(kc, cp3)
    newest_first = [cp3, cp2, cp1.id]

    assert [c.id for c in kc.checkpoints.list(PROVIDER)] == newest_first
    assert [c.id for c in kc.checkpoints.list(PROVIDER, search_opts={"plan_id": plan1.id})] == [
        cp3,
        cp1.id,
    ]
    assert [c.id for c in kc.checkpoints.list(PROVIDER, sort="created_at:asc")] == list(
        reversed(newest_first)
    )
    assert [
        c.id for c in kc.checkpoints.list(PROVIDER, sort_key="created_at", sort_dir="asc")
    ] == list(reversed(newest_first))
    assert [c.id for c in kc.checkpoints.list(PROVIDER, limit=2)] == newest_first[:2]
    assert [c.id for c in kc.checkpoints.list(PROVIDER, marker=cp3)] == newest_first[1:]
    assert [
        c.id for c in kc.checkpoints.list(PROVIDER, search_opts={"status": "available"})
    ] == newest_first
    assert kc.checkpoints.list(PROVIDER, search_opts={"status": "deleted"}) == []
    today = dt.datetime.now(dt.UTC).date()
    tomorrow, yesterday = today + dt.timedelta(days=1), today - dt.timedelta(days=1)
    assert kc.checkpoints.list(PROVIDER, search_opts={"start_date": str(tomorrow)}) == []
    assert kc.checkpoints.list(PROVIDER, search_opts={"end_date": str(yesterday)}) == []
    both_days = {"start_date": str(yesterday), "end_date": str(tomorrow)}
    assert [c.id for c in kc.checkpoints.list(PROVIDER, search_opts=both_days)] == newest_first
    with pytest.raises(karbor_exc.BadRequest) as refused:
        kc.checkpoints.list(PROVIDER, search_opts={"plan": plan1.id})
    assert "plan" in str(refused.value)

    def cli_ids(*args: str) -> list[str]:
        return [r["Id"] for r in _table(live.karbor("checkpoint-list", PROVIDER, *args))]

    assert cli_ids("--plan_id", plan2) == [cp2]
    assert cli_ids("--plan_id", plan1.id, "--sort", "created_at:asc") == [cp1.id, cp3]
    assert cli_ids("--start_date", str(tomorrow)) == []
    assert cli_ids("--end_date", str(today), "--sort_key", "created_at", "--sort_dir", "desc") == (
        newest_first
    )
    assert cli_ids("--limit", "1") == [cp3]
    shown = _shown(live.karbor("checkpoint-show", PROVIDER, cp1.id))
    assert shown["status"] == "available"
    graph = json.loads(shown["resource_graph"])
    assert web1 in json.dumps(graph)
    assert isinstance(kc.checkpoints.get(PROVIDER, cp1.id).resource_graph, str)

    # restores: one by the library, one by the command line
    item = session.get(
        "/checkpoint_items",
        endpoint_filter={"service_type": "data-protect"},
        params={"checkpoint_id": cp1.id},
    ).json()["checkpoint_items"][0]
    volume_backup = item["extend_info"]["volume_backups"][0]["id"]
    server = session.get(f"/servers/{web1}", endpoint_filter={"service_type": "data-protect"})
    disk_id = server.json()["server"]["disks"][0]["id"]
    parameters = {
        "checkpoint_item_id": item["id"],
        "power_on": False,
        "targets": {
            "server_id": web1,
            "volumes": [{"backup_id": volume_backup, "volume_id": disk_id}],
        },
    }
    r1 = kc.restores.create(PROVIDER, cp1.id, None, parameters, None)
    assert _wait_restore(kc, r1.id).status == "success"
    r2 = _shown(
        live.karbor("restore-create", PROVIDER, cp1.id, "--parameters-json", json.dumps(parameters))
    )["id"]
    assert _wait_restore(kc, r2).status == "success"
    assert [r.id for r in kc.restores.list()] == [r2, r1.id]
    assert [r.id for r in kc.restores.list(sort="created_at:asc")] == [r1.id, r2]
    assert [r.id for r in kc.restores.list(search_opts={"status": "fail"})] == []
    rows = _table(live.karbor("restore-list", "--status", "success", "--sort", "created_at:asc"))
    assert [r["Id"] for r in rows] == [r1.id, r2]
    assert _shown(live.karbor("restore-show", r2))["status"] == "success"

    # operation logs, with Karbor's names for statuses
    backups = kc.operation_logs.list(search_opts={"status": "available"})
    assert {log.checkpoint_id for log in backups} == {cp1.id, cp2, cp3}
    assert all(log.provider_id == PROVIDER for log in backups)
    assert all(log.operation_type == "backup" for log in backups)
    restores = kc.operation_logs.list(search_opts={"operation_type": "restore"})
    assert {log.restore_id for log in restores} == {r1.id, r2}
    rows = _table(
        live.karbor("operationlog-list", "--status", "success", "--sort", "created_at:asc")
    )
    assert len(rows) == 5
    assert [r["Restore Id"] for r in rows][-2:] == [r1.id, r2]
    log_id = rows[0]["Id"]
    assert _shown(live.karbor("operationlog-show", log_id))["status"] == "success"
    assert kc.operation_logs.get(log_id).provider_id == PROVIDER

    # deletions: a checkpoint by the command line, the plans by each
    live.karbor("checkpoint-delete", PROVIDER, cp3)
    deadline = time.monotonic() + 60
    while cp3 in [c.id for c in kc.checkpoints.list(PROVIDER)]:
        assert time.monotonic() < deadline, "the checkpoint was not deleted"
        time.sleep(0.2)
    assert [c.id for c in kc.checkpoints.list(PROVIDER)] == [cp2, cp1.id]
    live.karbor("plan-delete", plan2)
    kc.plans.delete(plan1.id)
    assert kc.plans.list() == []
    with pytest.raises(karbor_exc.NotFound):
        kc.plans.get(plan1.id)

    # the command line by token, and with a wrong password
    token = session.get_token()
    assert token is not None
    by_token = _table(live.karbor("provider-list", token=token))
    assert [r["Id"] for r in by_token] == [PROVIDER]
    env_wrong = live.karbor("--os-password", "wrong", "provider-list", check=False)
    assert AUTH_FAILED in env_wrong


def test_openstack_command_line(live: Live) -> None:
    auth = live.password_auth()
    session = ks_session.Session(auth=auth)
    web1 = _server(live, session, "web1")
    other_plan = "0b6f8d3c-4f43-4c53-9d7a-0f6e2a1c9b11"

    issued = live.openstack("token", "issue")
    assert issued["project_id"] == auth.get_project_id(session)
    providers = live.openstack("data", "protection", "provider", "list")
    assert [(p["Id"], p["Name"]) for p in providers] == [(PROVIDER, "CSBS")]
    instance = live.openstack(
        "data", "protection", "protectable", "instance", "show", "OS::Nova::Server", web1
    )
    assert instance["name"] == "web1"

    plan = live.openstack(
        "data",
        "protection",
        "plan",
        "create",
        "osc-plan",
        PROVIDER,
        f"{web1}=OS::Nova::Server=web1",
    )
    assert plan["status"] == "suspended"
    listed = live.openstack("data", "protection", "plan", "list", "--status", "suspended")
    assert [p["Id"] for p in listed] == [plan["id"]]
    assert live.openstack("data", "protection", "plan", "list", "--status", "started") == []
    assert live.openstack("data", "protection", "plan", "show", plan["id"])["name"] == "osc-plan"

    # create and show parse resource_graph as JSON: it is JSON text, never null
    made = live.openstack("data", "protection", "checkpoint", "create", PROVIDER, plan["id"])
    kc = karbor_client.Client(
        "1",
        session.get_endpoint(service_type="data-protect", interface="public"),
        session=session,
        auth=auth,
        service_type="data-protect",
    )
    _wait_checkpoint(kc, made["id"])
    shown = live.openstack("data", "protection", "checkpoint", "show", PROVIDER, made["id"])
    assert shown["status"] == "available"
    assert web1 in json.dumps(shown["resource_graph"])
    # The plugin's checkpoint list formats its rows with a plain function, which current
    # osc-lib refuses ("Invalid formatter provided."): only an empty answer prints there, so
    # the filter is checked by another plan's id (the non-empty lists: karbor's tests above).
    assert (
        live.openstack(
            "data", "protection", "checkpoint", "list", PROVIDER, "--plan_id", other_plan
        )
        == []
    )
    logs = live.openstack("data", "protection", "operationlog", "list", "--status", "available")
    assert [(x["Checkpoint id"], x["Provider id"]) for x in logs] == [(made["id"], PROVIDER)]
    assert live.openstack("data", "protection", "restore", "list") == []

    # a token as the credential, and a wrong password shown readably
    by_token = live.openstack("data", "protection", "provider", "list", token=issued["id"])
    assert [p["Id"] for p in by_token] == [PROVIDER]
    wrong = live.openstack("data", "protection", "plan", "list", password="wrong", check=False)
    assert AUTH_FAILED in wrong
    assert "Unrecognized schema" not in wrong
