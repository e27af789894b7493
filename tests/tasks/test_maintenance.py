"""Space comes back on its own (issue 21, item 3): the scheduler enqueues a maintenance task
that sweeps a project's unreferenced chunks, with no later deletion needed."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

from csbs import app as composition
from csbs.domain.operations import OperationType, TaskFilter
from csbs.repository import layout
from tests.tasks.conftest import PROVIDER, Cloud

SIZE = 2 * 1024 * 1024


def _backup(cloud: Cloud, name: str) -> dict[str, Any]:
    image = cloud.root / f"{name}.img"
    image.write_bytes(os.urandom(SIZE))
    server = cloud.server(name, [image])
    r = cloud.protect(server["id"])
    assert r.status_code == 200, r.text
    done = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
    assert done["status"] == "available", done["extend_info"]["fail_reason"]
    return done


def _capacity(cloud: Cloud) -> dict[str, Any]:
    r = cloud.env.client.get(f"/v1/{cloud.pid}/quotas", headers=cloud.headers())
    assert r.status_code == 200, r.text
    (found,) = [x for x in r.json()["quotas"]["resources"] if x["type"] == "backup_capacity"]
    return dict(found)


def _chunk_blobs(cloud: Cloud) -> set[str]:
    store = cloud.worker_runtime.services.repository.store
    return set(store.list(layout.chunks_prefix(cloud.pid)))


def _maintenance_logs(cloud: Cloud) -> list[dict[str, Any]]:
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs?operation_type=maintenance", headers=cloud.headers()
    )
    assert r.status_code == 200, r.text
    return list(r.json()["operation_logs"])


def test_deleted_space_comes_back_within_grace_plus_interval(slow_sweep_cloud: Cloud) -> None:
    cloud = slow_sweep_cloud
    runtime = cloud.worker_runtime
    settings = runtime.settings
    kept = _backup(cloud, "kept")
    doomed = _backup(cloud, "doomed")
    blobs_before = _chunk_blobs(cloud)
    stored_both = _capacity(cloud)["stored_bytes"]
    assert _capacity(cloud)["pending_release_bytes"] == 0
    assert _capacity(cloud)["release_by"] is None

    scheduler = composition.make_scheduler(runtime)
    scheduler.start()
    try:
        # Nothing to release: the scheduler enqueues no maintenance.
        time.sleep(1.5)
        assert _maintenance_logs(cloud) == []

        r = cloud.env.client.delete(
            f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{doomed['checkpoint_id']}",
            headers=cloud.headers(),
        )
        assert r.status_code == 200, r.text
        deleted_at = time.monotonic()
        deadline = deleted_at + 60
        while (
            cloud.env.client.get(
                f"/v1/{cloud.pid}/checkpoint_items/{doomed['id']}", headers=cloud.headers()
            ).status_code
            != 404
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Deleted: its chunks no longer count, but their space is pending release (the
        # deletion's own sweep leaves them: the grace protects uploads in flight).
        capacity = _capacity(cloud)
        assert 0 < capacity["stored_bytes"] < stored_both
        if capacity["pending_release_bytes"]:  # not already released by a quick sweep
            assert capacity["pending_release_bytes"] >= SIZE // 2
            release_by = dt.datetime.fromisoformat(capacity["release_by"]).replace(tzinfo=dt.UTC)
            now = dt.datetime.now(dt.UTC)
            limit = settings.sweep_grace_seconds + settings.maintenance_interval_seconds
            assert now < release_by <= now + dt.timedelta(seconds=limit + 1)

        # No other deletion, no other call: the space comes back on its own.
        while _capacity(cloud)["pending_release_bytes"] or _chunk_blobs(cloud) == blobs_before:
            assert time.monotonic() < deadline, "space did not come back"
            time.sleep(0.1)
        took = time.monotonic() - deleted_at
    finally:
        scheduler.stop()
    bound = settings.sweep_grace_seconds + settings.maintenance_interval_seconds
    # The grace, one interval, a scheduler tick, and the task's own run.
    assert took <= bound + settings.scheduler_tick_seconds + 3, took
    assert len(_chunk_blobs(cloud)) < len(blobs_before)
    assert _capacity(cloud)["release_by"] is None

    logs = _maintenance_logs(cloud)
    while any(x["status"] in ("waiting", "running") for x in logs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
        logs = _maintenance_logs(cloud)
    assert logs and all(x["status"] == "success" for x in logs)
    assert sum(x["extra_info"]["swept_bytes"] for x in logs) > 0
    repository = runtime.services.repository
    report = repository.check(cloud.pid, read_data=True)
    assert report.ok, report
    repository.verify(cloud.pid, kept["id"] + ".1")


def test_one_maintenance_task_per_project_at_a_time(cloud: Cloud) -> None:
    """Enqueued only when a sweep would release something, and never twice while one waits."""
    services = cloud.worker_runtime.services
    maintenance = services.maintenance
    doomed = _backup(cloud, "once")
    assert maintenance.enqueue_due() == []  # nothing to release yet
    cloud.worker.stop(grace=5)  # hold the tasks in the queue
    services.repository.delete_backup(cloud.pid, doomed["id"] + ".1")
    assert maintenance.enqueue_due() == [cloud.pid]
    assert maintenance.enqueue_due() == []
    assert maintenance.enqueue(cloud.pid) is None
    waiting = services.tasks.count(
        TaskFilter(project_id=cloud.pid, operation_type=OperationType.MAINTENANCE.value)
    )
    assert waiting == 1
