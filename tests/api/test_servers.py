"""The server inventory: path security, admin-only writes, project isolation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from csbs.domain.identity import Role
from tests.support.runtime import Env


@pytest.fixture
def disks(env: Env) -> Path:
    root = env.runtime.settings.effective_inventory_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    for name, size in (("a.img", 4 << 20), ("b.img", 8 << 20)):
        with open(root / name, "wb") as f:
            f.truncate(size)
    return root


def _create(env: Env, token: str, pid: str, paths: list[str], name: str = "web1") -> object:
    return env.client.post(
        f"/v1/{pid}/servers",
        headers={"X-Auth-Token": token},
        json={"server": {"name": name, "disks": [{"path": p} for p in paths]}},
    )


def test_admin_registers_members_read(env: Env, disks: Path) -> None:
    member = env.add_user("mia", "alpha", Role.MEMBER)
    pid = env.project_id("alpha")
    admin = env.admin_token()
    r = _create(env, admin, pid, [str(disks / "a.img"), str(disks / "b.img")])
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    server = r.json()["server"]  # type: ignore[attr-defined]
    assert [d["size_bytes"] for d in server["disks"]] == [4 << 20, 8 << 20]
    assert [d["bootable"] for d in server["disks"]] == [True, False]
    assert server["status"] == "stopped"
    listed = env.client.get(f"/v1/{pid}/servers", headers={"X-Auth-Token": member}).json()
    assert [s["id"] for s in listed["servers"]] == [server["id"]]
    shown = env.client.get(f"/v1/{pid}/servers/{server['id']}", headers={"X-Auth-Token": member})
    assert shown.status_code == 200
    # Members read but do not change the inventory.
    assert _create(env, member, pid, [str(disks / "a.img")], "x").status_code == 403  # type: ignore[attr-defined]
    r = env.client.put(
        f"/v1/{pid}/servers/{server['id']}",
        headers={"X-Auth-Token": admin},
        json={"server": {"status": "running"}},
    )
    assert r.json()["server"]["status"] == "running"
    assert (
        env.client.delete(
            f"/v1/{pid}/servers/{server['id']}", headers={"X-Auth-Token": admin}
        ).status_code
        == 200
    )
    gone = env.client.get(f"/v1/{pid}/servers/{server['id']}", headers={"X-Auth-Token": member})
    assert gone.status_code == 400 and gone.json()["error_code"] == "CSBS.6000"


def test_other_projects_server_is_not_found(env: Env, disks: Path) -> None:
    env.add_user("mia", "alpha", Role.MEMBER)
    beta = env.add_user("bo", "beta", Role.MEMBER)
    alpha_id, beta_id = env.project_id("alpha"), env.project_id("beta")
    server = _create(env, env.admin_token(), alpha_id, [str(disks / "a.img")]).json()["server"]  # type: ignore[attr-defined]
    r = env.client.get(f"/v1/{beta_id}/servers/{server['id']}", headers={"X-Auth-Token": beta})
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6000"
    r = env.client.get(f"/v1/{alpha_id}/servers/{server['id']}", headers={"X-Auth-Token": beta})
    assert r.status_code == 403


def test_an_admin_shows_any_projects_server_with_all_tenants(env: Env, disks: Path) -> None:
    """How the command line finds the project of a server it is given by id alone."""
    env.add_user("mia", "alpha", Role.MEMBER)
    beta = env.add_user("bo", "beta", Role.MEMBER)
    alpha_id, beta_id = env.project_id("alpha"), env.project_id("beta")
    admin_id = env.project_id("admin")
    server = _create(env, env.admin_token(), alpha_id, [str(disks / "a.img")]).json()["server"]  # type: ignore[attr-defined]
    path = f"/v1/{admin_id}/servers/{server['id']}"
    assert env.client.get(path, headers={"X-Auth-Token": env.admin_token()}).status_code == 400
    shown = env.client.get(
        path, params={"all_tenants": "true"}, headers={"X-Auth-Token": env.admin_token()}
    )
    assert shown.status_code == 200, shown.text
    assert shown.json()["server"]["project_id"] == alpha_id
    # Only administrators may look across projects.
    r = env.client.get(
        f"/v1/{beta_id}/servers/{server['id']}",
        params={"all_tenants": "true"},
        headers={"X-Auth-Token": beta},
    )
    assert r.status_code == 403


def test_path_security(env: Env, disks: Path, tmp_path: Path) -> None:
    pid = env.project_id("admin")
    admin = env.admin_token()
    outside = tmp_path / "outside.img"
    outside.write_bytes(b"\0" * 4096)
    (disks / "escape.img").symlink_to(outside)
    (disks / "sub").mkdir()
    unreadable = disks / "locked.img"
    unreadable.write_bytes(b"\0" * 4096)
    os.chmod(unreadable, 0)
    cases = {
        "relative": "a.img",
        "dotdot": f"{disks}/sub/../a.img",
        "outside root": str(outside),
        "symlink escaping": str(disks / "escape.img"),
        "directory": str(disks / "sub"),
        "missing": str(disks / "nope.img"),
        "character device": "/dev/null",
    }
    if os.geteuid() != 0:  # root reads anything; the check matters for the service user
        cases["unreadable"] = str(unreadable)
    for why, path in cases.items():
        r = _create(env, admin, pid, [path])
        assert r.status_code == 400, (why, r.text)  # type: ignore[attr-defined]
        assert r.json()["error_code"] == "CSBS.9001", why  # type: ignore[attr-defined]
    assert env.services.inventory.servers(pid) == []
    # One path backs one disk only.
    assert _create(env, admin, pid, [str(disks / "a.img")]).status_code == 200  # type: ignore[attr-defined]
    again = _create(env, admin, pid, [str(disks / "a.img")], "web2")
    assert again.status_code == 400  # type: ignore[attr-defined]


def test_bad_bodies(env: Env, disks: Path) -> None:
    pid = env.project_id("admin")
    admin = env.admin_token()
    for body in (
        {"server": {"name": "x", "disks": []}},
        {"server": {"name": "bad name!", "disks": [{"path": str(disks / "a.img")}]}},
        {"server": {"name": "x", "disks": [{"path": str(disks / "a.img")}], "extra": 1}},
        {"server": {"name": "x"}},
    ):
        r = env.client.post(f"/v1/{pid}/servers", headers={"X-Auth-Token": admin}, json=body)
        assert r.status_code == 400, body
