"""Quotas over HTTP (Q1 and the admin change), and their enforcement on backup creation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csbs.domain.backups import BackupFilter, CheckpointFilter
from csbs.domain.identity import Role
from csbs.domain.paging import PageRequest
from csbs.queue import TaskFilter
from tests.support.runtime import Env, make_env
from tests.support.seed import seed_backup

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


@dataclasses.dataclass
class World:
    env: Env
    pid: str
    member: str
    reader: str
    admin: str

    def quotas(self, token: str | None = None, pid: str | None = None) -> Any:
        r = self.env.client.get(
            f"/v1/{pid or self.pid}/quotas", headers={"X-Auth-Token": token or self.member}
        )
        assert r.status_code == 200, r.text
        return r.json()

    def set(self, body: Any, token: str | None = None, pid: str | None = None) -> Any:
        return self.env.client.put(
            f"/v1/{pid or self.pid}/admin/quotas",
            headers={"X-Auth-Token": token or self.admin},
            json=body,
        )

    def server(self, name: str) -> str:
        root = self.env.runtime.settings.effective_inventory_roots[0]
        root.mkdir(parents=True, exist_ok=True)
        disk = root / f"{name}.img"
        with open(disk, "wb") as f:
            f.truncate(1 << 20)
        r = self.env.client.post(
            f"/v1/{self.pid}/servers",
            headers={"X-Auth-Token": self.admin},
            json={"server": {"name": name, "disks": [{"path": str(disk)}]}},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["server"]["id"])

    def protect(self, server_id: str) -> Any:
        return self.env.client.post(
            f"/v1/{self.pid}/providers/{PROVIDER}/resources/{server_id}/action",
            headers={"X-Auth-Token": self.member},
            json={"protect": {}},
        )


def _world(tmp_path: Path, db_url: str, **settings: Any) -> Iterator[World]:
    env = make_env(tmp_path, db_url, **settings)
    try:
        member = env.add_user("mia", "alpha", Role.MEMBER)
        reader = env.add_user("rey", "alpha", Role.READER)
        yield World(env, env.project_id("alpha"), member, reader, env.admin_token())
    finally:
        env.client.close()
        env.runtime.close()


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from _world(tmp_path, db_url)


def _resources(body: Any) -> dict[str, Any]:
    return {r["type"]: r for r in body["quotas"]["resources"]}


def test_defaults_and_shape(world: World) -> None:
    assert world.quotas() == {
        "quotas": {
            "resources": [
                {
                    "type": "backup_capacity",
                    "unit": "GB",
                    "quota": -1,
                    "used": 0.0,
                    # csbs's additions: exact bytes, and space a deletion left to release
                    "stored_bytes": 0,
                    "pending_release_bytes": 0,
                    "release_by": None,
                },
                {"type": "backups", "quota": 600, "used": 0},
            ]
        }
    }
    assert world.quotas(world.reader) == world.quotas()


def test_defaults_come_from_settings(tmp_path: Path, db_url: str) -> None:
    for w in _world(tmp_path, db_url, quota_backups=7, quota_capacity_gb=3):
        res = _resources(w.quotas())
        assert res["backups"]["quota"] == 7 and res["backup_capacity"]["quota"] == 3


def test_backups_used_counts_the_projects_backups(world: World) -> None:
    s = world.env.services
    for i in range(3):
        seed_backup(s, world.pid, f"b{i}")
    seed_backup(s, world.env.project_id("admin"), "elsewhere")
    assert _resources(world.quotas())["backups"]["used"] == 3
    assert (
        _resources(world.quotas(world.admin, world.env.project_id("admin")))["backups"]["used"] == 1
    )


def test_only_admins_change_quotas(world: World) -> None:
    for token in (world.member, world.reader):
        r = world.set({"quotas": {"backups": 1}}, token)
        assert r.status_code == 403 and r.json()["error_code"] == "CSBS.9011", r.text
    assert _resources(world.quotas())["backups"]["quota"] == 600
    # The CSBS path itself stays read-only.
    r = world.env.client.put(
        f"/v1/{world.pid}/quotas",
        headers={"X-Auth-Token": world.admin},
        json={"quotas": {"backups": 1}},
    )
    assert r.status_code == 405

    r = world.set({"quotas": {"backups": 5}})
    assert r.status_code == 200, r.text
    assert _resources(r.json())["backups"]["quota"] == 5
    r = world.set({"quotas": {"backup_capacity": 2}})
    res = _resources(r.json())
    assert res["backups"]["quota"] == 5 and res["backup_capacity"]["quota"] == 2
    assert _resources(world.quotas()) == res
    r = world.set({"quotas": {"backups": -1, "backup_capacity": -1}})
    res = _resources(r.json())
    assert res["backups"]["quota"] == -1 and res["backup_capacity"]["quota"] == -1


@pytest.mark.parametrize(
    "body",
    [
        {"quotas": {"backups": -2}},
        {"quotas": {"backup_capacity": -5}},
        {"quotas": {"backups": 2**31}},
        {"quotas": {"backups": "5"}},
        {"quotas": {"backups": 1.5}},
        {"quotas": {"backups": True}},
        {"quotas": {"bogus": 1}},
        {"quota": {"backups": 1}},
    ],
)
def test_bad_quota_values(world: World, body: Any) -> None:
    r = world.set(body)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", r.text
    assert _resources(world.quotas())["backups"]["quota"] == 600


def test_unknown_project(world: World) -> None:
    r = world.set({"quotas": {"backups": 1}}, pid="no-such-project")
    assert r.status_code == 404, r.text


def test_backup_over_the_backups_quota_is_refused_and_creates_nothing(world: World) -> None:
    s = world.env.services
    seed_backup(s, world.pid, "old1")
    seed_backup(s, world.pid, "old2")
    assert world.set({"quotas": {"backups": 3}}).status_code == 200
    first, second = world.server("web1"), world.server("web2")
    assert world.protect(first).status_code == 200
    assert _resources(world.quotas())["backups"]["used"] == 3

    before_tasks = s.tasks.count(TaskFilter(project_id=world.pid))
    r = world.protect(second)
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "CSBS.9006"
    assert r.json()["error_msg"] == "Quota exceeded for resources: backups"
    assert s.backups.count(BackupFilter(project_id=world.pid)) == 3
    assert s.backups.count(BackupFilter(resource_id=second)) == 0
    assert s.tasks.count(TaskFilter(project_id=world.pid)) == before_tasks
    assert len(s.backups.checkpoints(CheckpointFilter(world.pid), PageRequest()).items) == 3

    # raising the quota lets it through; -1 is unlimited
    assert world.set({"quotas": {"backups": -1}}).status_code == 200
    assert world.protect(second).status_code == 200
    assert _resources(world.quotas())["backups"]["used"] == 4


def test_zero_capacity_refuses_every_backup(world: World) -> None:
    sid = world.server("web1")
    assert world.set({"quotas": {"backup_capacity": 0}}).status_code == 200
    r = world.protect(sid)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9006"
    assert r.json()["error_msg"] == "Quota exceeded for resources: backup_capacity"
    assert world.set({"quotas": {"backups": 0}}).status_code == 200
    r = world.protect(sid)
    assert r.json()["error_msg"] == "Quota exceeded for resources: backups, backup_capacity"
    assert world.env.services.backups.count(BackupFilter(project_id=world.pid)) == 0
