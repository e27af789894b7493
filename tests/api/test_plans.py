"""Karbor plans over HTTP: the same policies as P1-P5 (decision 0017)."""

from __future__ import annotations

from typing import Any

from csbs.domain.identity import Role
from tests.support.runtime import Env

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


def _server(env: Env, admin: str, pid: str, name: str) -> str:
    disk = env.runtime.settings.data_dir / "disks" / f"{name}.img"
    disk.parent.mkdir(parents=True, exist_ok=True)
    disk.write_bytes(bytes(64 * 1024))
    r = env.client.post(
        f"/v1/{pid}/servers",
        headers={"X-Auth-Token": admin},
        json={"server": {"name": name, "disks": [{"path": str(disk)}]}},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["server"]["id"])


def test_a_plan_is_a_policy_in_karbor_shape(env: Env) -> None:
    admin = env.admin_token()
    member = env.add_user("mia", "alpha", Role.MEMBER)
    reader = env.add_user("rex", "alpha", Role.READER)
    pid = env.project_id("alpha")
    web1 = _server(env, admin, pid, "web1")
    h = {"X-Auth-Token": member}
    body: dict[str, Any] = {
        "plan": {
            "name": "nightly",
            "description": "servers",
            "provider_id": PROVIDER,
            "resources": [{"id": web1, "type": "OS::Nova::Server", "name": "web1"}],
            "parameters": {"OS::Nova::Server": {}},
        }
    }
    made = env.client.post(f"/v1/{pid}/plans", headers=h, json=body)
    assert made.status_code == 200, made.text
    plan = made.json()["plan"]
    assert plan["status"] == "suspended"
    assert plan["provider_id"] == PROVIDER and plan["project_id"] == pid
    assert plan["resources"] == [
        {"id": web1, "type": "OS::Nova::Server", "name": "web1", "extra_info": {}}
    ]
    assert plan["parameters"] == {"OS::Nova::Server": {}}

    # the same row through the CSBS view: a disabled schedule that keeps every backup
    policy = env.client.get(f"/v1/{pid}/policies/{plan['id']}", headers=h).json()["policy"]
    op = policy["scheduled_operations"][0]
    assert op["enabled"] is False and op["operation_definition"]["permanent"] is True

    started = env.client.put(
        f"/v1/{pid}/plans/{plan['id']}", headers=h, json={"plan": {"status": "started"}}
    )
    assert started.json()["plan"]["status"] == "started"
    policy = env.client.get(f"/v1/{pid}/policies/{plan['id']}", headers=h).json()["policy"]
    assert policy["scheduled_operations"][0]["enabled"] is True
    assert policy["status"] == "enabled"
    renamed = env.client.put(
        f"/v1/{pid}/plans/{plan['id']}",
        headers=h,
        json={"plan": {"name": "weekly", "resources": []}},
    ).json()["plan"]
    assert renamed["name"] == "weekly" and renamed["resources"] == []
    assert renamed["status"] == "started"

    # refusals: 4xx with CSBS codes
    cases = [
        ("POST", "/plans", {"plan": {**body["plan"], "provider_id": "other"}}, 400, "CSBS.9001"),
        ("POST", "/plans", {"plan": {**body["plan"], "name": "has spaces"}}, 400, "CSBS.9001"),
        ("POST", "/plans", {"plan": {"name": "x"}}, 400, "CSBS.9001"),
        ("POST", "/plans", {**body, "plan": {**body["plan"], "name": "weekly"}}, 400, None),
        ("PUT", f"/plans/{plan['id']}", {"plan": {"status": "running"}}, 400, "CSBS.9001"),
        ("PUT", "/plans/nope", {"plan": {"status": "started"}}, 404, "CSBS.3000"),
        ("GET", "/plans/nope", None, 404, "CSBS.3000"),
        ("DELETE", "/plans/nope", None, 404, "CSBS.3000"),
    ]
    for method, path, payload, status, code in cases:
        r = env.client.request(method, f"/v1/{pid}{path}", headers=h, json=payload)
        assert r.status_code == status, (method, path, r.text)
        if code:
            assert r.json()["error_code"] == code, (method, path, r.text)
    # a reader reads and may not write
    rh = {"X-Auth-Token": reader}
    assert env.client.get(f"/v1/{pid}/plans/{plan['id']}", headers=rh).status_code == 200
    assert env.client.post(f"/v1/{pid}/plans", headers=rh, json=body).status_code == 403
    assert env.client.delete(f"/v1/{pid}/plans/{plan['id']}", headers=rh).status_code == 403

    gone = env.client.delete(f"/v1/{pid}/plans/{plan['id']}", headers=h)
    assert gone.status_code == 202
    assert env.client.get(f"/v1/{pid}/policies/{plan['id']}", headers=h).status_code == 404
    assert env.client.get(f"/v1/{pid}/plans", headers=h).json() == {"plans": []}


def test_protectables_are_the_projects_servers(env: Env) -> None:
    admin = env.admin_token()
    member = env.add_user("mia", "alpha", Role.MEMBER)
    pid = env.project_id("alpha")
    web1 = _server(env, admin, pid, "web1")
    h = {"X-Auth-Token": member}
    base = f"/v1/{pid}/protectables"
    assert env.client.get(base, headers=h).json() == {"protectable_type": ["OS::Nova::Server"]}
    shown = env.client.get(f"{base}/OS::Nova::Server", headers=h).json()
    assert shown["protectable_type"]["name"] == "OS::Nova::Server"
    listed = env.client.get(f"{base}/OS::Nova::Server/instances", headers=h).json()
    assert [i["id"] for i in listed["instances"]] == [web1]
    one = env.client.get(f"{base}/OS::Nova::Server/instances/{web1}", headers=h).json()
    assert one["instance"]["name"] == "web1"
    for path, status in (
        (f"{base}/OS::Cinder::Volume", 400),
        (f"{base}/OS::Nova::Server/instances?name=web1", 400),
        (f"{base}/OS::Nova::Server/instances/nope", 404),
    ):
        r = env.client.get(path, headers=h)
        assert r.status_code == status, (path, r.text)
        assert r.json()["error_code"].startswith("CSBS.")
