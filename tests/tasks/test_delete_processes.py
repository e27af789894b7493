"""Deletions run by real `csbs worker` processes: the per-project cap, fairness, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from csbs.domain.identity import Role
from csbs.queue import TaskFilter, TaskStatus
from csbs.services.backups import ProtectRequest
from tests.support.processes import clean_env
from tests.tasks.conftest import PROVIDER, Cloud

pytestmark = pytest.mark.slow


def _workers(cloud: Cloud, n: int, concurrency: int, **env: str) -> list[subprocess.Popen[bytes]]:
    s = cloud.env.runtime.settings
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "csbs",
                "worker",
                "--data-dir",
                str(s.data_dir),
                "--database-url",
                str(s.database_url),
                "--concurrency",
                str(concurrency),
            ],
            stdout=subprocess.DEVNULL,
            env=clean_env(
                CSBS_LOG_LEVEL="WARNING",
                CSBS_CHUNK_SIZE=str(s.chunk_size),
                CSBS_SWEEP_GRACE_SECONDS="0",
                **env,
            ),
        )
        for _ in range(n)
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def _make_backups(cloud: Cloud, project_id: str, n: int, mb: int, tag: str = "d") -> list[Any]:
    made = []
    for i in range(n):
        disk = cloud.blank(f"{tag}-{project_id[:6]}-{i}", mb)
        with open(disk, "r+b") as f:
            # Distinct data: every chunk is its own reference, so deleting takes a while.
            f.write(os.urandom(mb << 19) if tag == "victim" else bytes([i % 251]) * (mb << 19))
        server = cloud.env.services.inventory.add_server(
            project_id,
            f"s{i}",
            [__import__("csbs.services.inventory", fromlist=["DiskSpec"]).DiskSpec(str(disk))],
        )
        made.append(cloud.env.services.backups.protect(project_id, ProtectRequest(server.id))[1])
    deadline = time.monotonic() + 120
    while any(cloud.env.services.backups.get(None, b.id).status.value != "available" for b in made):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return made


def test_admission_and_fairness_across_worker_processes(cloud: Cloud) -> None:
    beta_token = cloud.env.add_user("bo", "beta", Role.MEMBER)
    beta = cloud.env.project_id("beta")
    a_backups = _make_backups(cloud, cloud.pid, 12, 4)
    b_backups = _make_backups(cloud, beta, 3, 4)
    cloud.worker.stop(grace=2)
    for b in a_backups:
        assert (
            cloud.env.client.delete(
                f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{b.checkpoint_id}",
                headers=cloud.headers(),
            ).status_code
            == 200
        )
    for b in b_backups:
        r = cloud.env.client.delete(
            f"/v1/{beta}/providers/{PROVIDER}/checkpoints/{b.checkpoint_id}",
            headers={"X-Auth-Token": beta_token},
        )
        assert r.status_code == 200
    procs = _workers(cloud, 3, 4)
    try:
        store = cloud.env.services.tasks
        deadline = time.monotonic() + 180
        while store.count(TaskFilter(operation_type="delete", status=TaskStatus.SUCCESS)) < 15:
            failed = store.count(TaskFilter(operation_type="delete", status=TaskStatus.FAILED))
            assert failed == 0
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        _stop(procs)
    from csbs.domain.paging import PageRequest

    tasks = store.search(TaskFilter(operation_type="delete"), PageRequest()).items
    a_tasks = [t for t in tasks if t.project_id == cloud.pid]
    events = sorted(
        [(t.started_at, 1) for t in a_tasks] + [(t.ended_at, -1) for t in a_tasks],
        key=lambda e: (e[0], e[1]),
    )
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    assert peak <= 5
    b_tasks = [t for t in tasks if t.project_id == beta]
    last_a_start = max(t.started_at for t in a_tasks)  # type: ignore[type-var]
    assert all(t.started_at < last_a_start for t in b_tasks), "B waited for A's queue"  # type: ignore[operator]
    for b in a_backups + b_backups:
        r = cloud.env.client.get(
            f"/v1/{b.project_id}/checkpoint_items/{b.id}", headers=cloud.headers(cloud.admin)
        )
        assert r.status_code == 404
    repo = cloud.env.services.repository
    assert repo.check().ok
    assert repo.usage(cloud.pid).stored_bytes == 0 and repo.usage(beta).stored_bytes == 0


def test_kill_9_during_deletion_then_restart(cloud: Cloud) -> None:
    keep = _make_backups(cloud, cloud.pid, 1, 2, "keep")[0]
    victim = _make_backups(cloud, cloud.pid, 1, 48, "victim")[0]
    keep_bytes = open(
        cloud.env.services.inventory.get(None, keep.resource_id).disks[0].path, "rb"
    ).read()
    cloud.worker.stop(grace=2)
    r = cloud.env.client.delete(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{victim.checkpoint_id}",
        headers=cloud.headers(),
    )
    assert r.status_code == 200
    task_id = r.headers["X-Operation-Log-Id"]
    # One reference batch per transaction makes the deletion long enough to be killed in
    # the middle (with the default, this deletion is one step of a few milliseconds).
    procs = _workers(cloud, 1, 1, CSBS_TASK_LEASE_SECONDS="1", CSBS_RELEASE_REFS="1")
    store = cloud.env.services.tasks
    deadline = time.monotonic() + 60
    while (status := store.get(task_id).status) is not TaskStatus.RUNNING:  # type: ignore[union-attr]
        assert not status.terminal, f"the deletion ended ({status}) before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    procs[0].kill()
    procs[0].wait()
    procs = _workers(cloud, 1, 2, CSBS_TASK_LEASE_SECONDS="1")
    try:
        deadline = time.monotonic() + 90
        while not store.get(task_id).status.terminal:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        _stop(procs)
    done = store.get(task_id)
    assert done is not None and done.status is TaskStatus.SUCCESS
    assert done.attempts == 2  # the killed run, then the one that finished
    repo = cloud.env.services.repository
    assert repo.check(cloud.pid, read_data=True).ok
    target = cloud.server("t", [cloud.blank("t", 2)])
    cloud.worker.start = cloud.worker.start  # the fixture's worker stays stopped
    from csbs import app as composition

    worker = composition.make_worker(cloud.env.runtime, concurrency=1)
    worker.start()
    try:
        rr = cloud.env.services.restores.restore(
            cloud.pid,
            __import__("csbs.services.restores", fromlist=["RestoreRequest"]).RestoreRequest(
                checkpoint_id=keep.checkpoint_id,
                backup_id=keep.id,
                server_id=target["id"],
                mappings=[
                    __import__("csbs.domain.restores", fromlist=["VolumeMapping"]).VolumeMapping(
                        keep.disks[0].id, target["disks"][0]["id"]
                    )
                ],
            ),
        )
        done = cloud.wait_restore(rr.id)
    finally:
        worker.stop(grace=2)
    assert done["status"] == "success"
    assert open(target["disks"][0]["path"], "rb").read() == keep_bytes


def test_a_crash_loop_does_not_abandon_deletions(cloud: Cloud) -> None:
    """Killing the worker eight times in a row (more than `task_max_attempts`) while
    deletions run: each is resumed by the next worker, none gives up, all end `success`."""
    backups = _make_backups(cloud, cloud.pid, 5, 16, "victim")
    cloud.worker.stop(grace=2)
    for b in backups:
        r = cloud.env.client.delete(
            f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{b.checkpoint_id}",
            headers=cloud.headers(),
        )
        assert r.status_code == 200
    store = cloud.env.services.tasks
    deletions = TaskFilter(operation_type="delete")
    from csbs.domain.paging import PageRequest

    def tasks() -> list[Any]:
        return list(store.search(deletions, PageRequest()).items)

    settings = {"CSBS_TASK_LEASE_SECONDS": "1", "CSBS_RELEASE_REFS": "1"}
    kills = 0
    for _ in range(8):
        before = {t.id: t.attempts for t in tasks()}
        (proc,) = _workers(cloud, 1, 5, CSBS_TASK_MAX_ATTEMPTS="3", **settings)
        deadline = time.monotonic() + 60
        # Kill it as soon as it has claimed something (anew, after the last kill's reaping).
        while not any(
            t.status is TaskStatus.RUNNING and t.attempts > before[t.id] for t in tasks()
        ):
            if all(t.status.terminal for t in tasks()):
                break
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        kills += 1
        assert not [t for t in tasks() if t.status.terminal and t.status is not TaskStatus.SUCCESS]
    (proc,) = _workers(cloud, 1, 5, CSBS_TASK_MAX_ATTEMPTS="3", CSBS_TASK_LEASE_SECONDS="1")
    try:
        deadline = time.monotonic() + 120
        while not all(t.status.terminal for t in tasks()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        _stop([proc])
    done = tasks()
    assert kills == 8
    assert [t.status for t in done] == [TaskStatus.SUCCESS] * 5, [t.error_info for t in done]
    # At least one of them was lost more often than it had attempts to spare.
    assert max(t.interruptions for t in done) > 3, [(t.attempts, t.interruptions) for t in done]
    for b in backups:
        url = f"/v1/{cloud.pid}/checkpoint_items/{b.id}"
        assert cloud.env.client.get(url, headers=cloud.headers()).status_code == 404
    assert cloud.env.services.repository.check(cloud.pid, read_data=True).ok
