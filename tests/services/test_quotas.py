"""Quota enforcement in the service layer: the capacity boundary, batches of new backups
(as a policy run asks for them) and two creations racing for the last slot."""

from __future__ import annotations

import threading

import pytest

from csbs.domain import errors
from csbs.domain.backups import BackupFilter
from csbs.domain.quotas import GB, Quotas
from csbs.services.backups import ProtectRequest
from csbs.services.inventory import DiskSpec
from csbs.services.quotas import QuotaService
from tests.support.runtime import Env
from tests.support.seed import seed_backup


def _server(env: Env, project_id: str, name: str) -> str:
    root = env.runtime.settings.effective_inventory_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    p = root / f"{name}.img"
    with open(p, "wb") as f:
        f.truncate(1 << 20)
    return env.services.inventory.add_server(project_id, name, [DiskSpec(path=str(p))]).id


def test_capacity_is_refused_once_reached(env: Env) -> None:
    stored = {"bytes": 0}
    pid = env.project_id("admin")
    quotas = QuotaService(
        env.services.db, env.clock, Quotas(backups=-1, capacity_gb=1), lambda _p: stored["bytes"]
    )
    for value, allowed in ((0, True), (GB - 1, True), (GB, False), (5 * GB, False)):
        stored["bytes"] = value
        with env.services.db.write() as s:
            if allowed:
                quotas.check_new_backups(s, pid, 1)
            else:
                with pytest.raises(errors.QuotaExceeded) as e:
                    quotas.check_new_backups(s, pid, 1)
                assert e.value.code == "CSBS.9006"
                assert e.value.message == "Quota exceeded for resources: backup_capacity"


def test_capacity_used_is_reported_in_gb(env: Env) -> None:
    stored = {"bytes": 0}
    pid = env.project_id("admin")
    quotas = QuotaService(
        env.services.db, env.clock, Quotas(backups=600, capacity_gb=-1), lambda _p: stored["bytes"]
    )
    for value, gb in ((0, 0.0), (GB + GB // 2, 1.5), (123_456_789, 0.114978), (1, 0.0)):
        stored["bytes"] = value
        usage = quotas.usage(pid)
        assert usage.stored_bytes == value and usage.capacity_gb == gb


def test_a_batch_counts_every_new_backup(env: Env) -> None:
    pid = env.project_id("admin")
    for i in range(3):
        seed_backup(env.services, pid, f"b{i}")
    env.services.quotas.set(pid, backups=5)
    with env.services.db.write() as s:
        env.services.quotas.check_new_backups(s, pid, 2)
        with pytest.raises(errors.QuotaExceeded, match="backups"):
            env.services.quotas.check_new_backups(s, pid, 3)


def test_two_creations_race_for_the_last_slot(env: Env) -> None:
    pid = env.project_id("admin")
    servers = [_server(env, pid, f"web{i}") for i in range(2)]
    env.services.quotas.set(pid, backups=1)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def run(sid: str) -> None:
        barrier.wait()
        try:
            env.services.backups.protect(pid, ProtectRequest(sid))
            outcomes.append("ok")
        except errors.QuotaExceeded:
            outcomes.append("quota")

    threads = [threading.Thread(target=run, args=(sid,)) for sid in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["ok", "quota"]
    assert env.services.backups.count(BackupFilter(project_id=pid)) == 1
