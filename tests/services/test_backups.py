"""Creating and querying backup records through the service (the HTTP routes come with the
backup task handler)."""

from __future__ import annotations

import pytest

from csbs.domain import errors
from csbs.domain.backups import BackupFilter, BackupRunning, BackupStatus, CheckpointFilter
from csbs.domain.inventory import ServerNotFound
from csbs.domain.paging import PageRequest, SortKey
from csbs.queue import TaskFilter, TaskStatus
from csbs.services.backups import ProtectRequest
from csbs.services.inventory import DiskSpec
from tests.support.runtime import Env


def _server(env: Env, project_id: str, name: str, host: str | None = None) -> str:
    root = env.runtime.settings.effective_inventory_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(2):
        p = root / f"{name}-{i}.img"
        with open(p, "wb") as f:
            f.truncate(1 << 20)
        paths.append(DiskSpec(path=str(p)))
    return env.services.inventory.add_server(project_id, name, paths, host=host).id


def test_protect_creates_record_backup_and_routed_task(env: Env) -> None:
    pid = env.project_id("admin")
    env.services.inventory.local_host = "h1"  # its disks are on this process's host
    sid = _server(env, pid, "web1", host="h1")
    cp, b = env.services.backups.protect(
        pid, ProtectRequest(sid, description="nightly", tags=[("env", "prod")])
    )
    assert cp.status is BackupStatus.PROTECTING and cp.plan_id.startswith("fake_")
    assert (
        b.status is BackupStatus.PROTECTING and b.name.startswith("manualbk_") and len(b.name) == 13
    )
    assert not b.incremental
    assert [d.disk_name for d in b.disks] == [f"{b.name}_web1-disk0", f"{b.name}_web1-disk1"]
    # Listable by checkpoint id at once (clients look it up right after R1).
    page = env.services.backups.search(
        BackupFilter(project_id=pid, checkpoint_id=cp.id), PageRequest()
    )
    assert [x.id for x in page.items] == [b.id]
    assert page.items[0].tags[0].key == "env"
    task = env.services.tasks.get(b.task_id)  # type: ignore[arg-type]
    assert task is not None and task.operation_type == "backup" and task.route == "h1"
    assert task.status is TaskStatus.WAITING and task.refs.checkpoint_item_id == b.id
    # A second backup while the first runs is refused, and nothing is created.
    with pytest.raises(BackupRunning):
        env.services.backups.protect(pid, ProtectRequest(sid))
    assert env.services.backups.count(BackupFilter(project_id=pid)) == 1
    assert env.services.tasks.count(TaskFilter(project_id=pid)) == 1


def test_protect_refusals(env: Env) -> None:
    pid = env.project_id("admin")
    sid = _server(env, pid, "web1")
    other = env.services.identity.create_project("other")
    cases = [
        (ProtectRequest("nope"), ServerNotFound, "CSBS.6000"),
        (ProtectRequest(sid, name="bad name"), errors.InvalidInput, "CSBS.9001"),
        (ProtectRequest(sid, description="<b>"), errors.InvalidInput, "CSBS.9001"),
        (ProtectRequest(sid, resource_type="OS::Cinder::Volume"), errors.InvalidInput, "CSBS.6003"),
        (
            ProtectRequest(sid, tags=[(f"k{i}", "v") for i in range(11)]),
            errors.InvalidInput,
            "CSBS.7000",
        ),
        (ProtectRequest(sid, tags=[("k", "v"), ("k", "w")]), errors.InvalidInput, "CSBS.9001"),
    ]
    for req, kind, code in cases:
        with pytest.raises(kind) as info:
            env.services.backups.protect(pid, req)
        assert info.value.code == code, req
    with pytest.raises(ServerNotFound):
        env.services.backups.protect(other.id, ProtectRequest(sid))
    assert env.services.backups.count(BackupFilter()) == 0


def test_check_protectable(env: Env) -> None:
    pid = env.project_id("admin")
    sid = _server(env, pid, "web1")
    got = env.services.backups.check_protectable(
        pid, [(sid, "OS::Nova::Server"), ("x", "OS::Nova::Server"), (sid, "other")]
    )
    assert [c.result for c in got] == [True, False, False]
    assert [c.error_code for c in got] == ["", "CSBS.6000", "CSBS.6003"]


def test_filters_paging_and_count(env: Env) -> None:
    pid = env.project_id("admin")
    ids = []
    for n in ("alpha", "beta", "gamma"):
        sid = _server(env, pid, n)
        env.clock.advance(1)
        ids.append(env.services.backups.protect(pid, ProtectRequest(sid, name=f"bk_{n}"))[1].id)
    svc = env.services.backups
    assert svc.count(BackupFilter(project_id=pid, name="bk_")) == 3
    assert [
        b.name for b in svc.search(BackupFilter(project_id=pid, name="et"), PageRequest()).items
    ] == ["bk_beta"]
    assert svc.count(BackupFilter(project_id=pid, resource_name="amm")) == 1
    assert svc.count(BackupFilter(project_id=pid, status="available")) == 0
    newest = svc.search(
        BackupFilter(project_id=pid), PageRequest(limit=2, sort=(SortKey("created_at", True),))
    )
    assert [b.id for b in newest.items] == ids[::-1][:2] and newest.has_more
    rest = svc.search(
        BackupFilter(project_id=pid),
        PageRequest(limit=2, marker=newest.items[-1].id, sort=(SortKey("created_at", True),)),
    )
    assert [b.id for b in rest.items] == ids[:1] and not rest.has_more
    by_name = svc.search(BackupFilter(project_id=pid), PageRequest(sort=(SortKey("name", False),)))
    assert [b.name for b in by_name.items] == ["bk_alpha", "bk_beta", "bk_gamma"]
    # Wildcards in the name filter are literal.
    assert svc.count(BackupFilter(project_id=pid, name="%")) == 0


def test_get_and_checkpoint_isolation(env: Env) -> None:
    pid = env.project_id("admin")
    other = env.services.identity.create_project("other")
    sid = _server(env, pid, "web1")
    cp, b = env.services.backups.protect(pid, ProtectRequest(sid))
    assert env.services.backups.get(pid, b.id).id == b.id
    with pytest.raises(errors.BackupNotFound):
        env.services.backups.get(other.id, b.id)
    assert env.services.backups.checkpoint(pid, cp.id).resources == ((sid, "web1"),)
    with pytest.raises(errors.NotFound):
        env.services.backups.checkpoint(other.id, cp.id)
    assert [
        c.id for c in env.services.backups.checkpoints(CheckpointFilter(pid), PageRequest()).items
    ] == [cp.id]
