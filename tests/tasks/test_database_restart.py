"""PostgreSQL restarted in the middle of a backup, a restore and a deletion: each task is
interrupted, not failed, resumes once the database answers, and ends `success` with
nothing lost or duplicated."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from csbs.domain.paging import PageRequest
from csbs.queue import Task, TaskFilter
from tests.support.databases import PostgresRestart
from tests.tasks.conftest import PROVIDER, Cloud

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PostgresRestart.possible(), reason="needs the local cluster, as root"),
]


@pytest.fixture
def restart() -> Iterator[PostgresRestart]:
    r = PostgresRestart()
    yield r
    r.wait_up()  # never leave the cluster down for the tests after this one


def _on_call(obj: Any, name: str, nth: int, action: Callable[[], None]) -> None:
    """Run `action` before the `nth` call of `obj.name` (an instance attribute over it)."""
    original = getattr(obj, name)
    calls = 0
    lock = threading.Lock()

    def wrapped(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        with lock:
            calls += 1
            now = calls
        if now == nth:
            action()
        return original(*args, **kw)

    setattr(obj, name, wrapped)


def _cut(restart: PostgresRestart) -> Callable[[], None]:
    def action() -> None:
        restart.begin()
        restart.wait_down()

    return action


def _task_of(cloud: Cloud, **by: str) -> Task:
    (task,) = cloud.env.services.tasks.search(TaskFilter(**by), PageRequest()).items  # type: ignore[arg-type]
    return task


def _backup(cloud: Cloud, server_id: str) -> dict[str, Any]:
    r = cloud.protect(server_id)
    assert r.status_code == 200, r.text
    return cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"], timeout=180)


def _stored(cloud: Cloud, backup_id: str) -> bytes:
    services = cloud.env.services
    backup = services.backups.get(None, backup_id)
    out = io.BytesIO()
    repo_id = str(backup.extra["repository_backup_id"])
    assert len(services.repository.disks(cloud.pid, repo_id)) == 1
    services.repository.restore(cloud.pid, repo_id, backup.disks[0].disk_id, out)
    return out.getvalue()


def _disk(cloud: Cloud, name: str, mb: int) -> tuple[Any, bytes]:
    path = cloud.blank(name, mb)
    data = os.urandom(mb << 20)
    path.write_bytes(data)
    return path, data


def test_backup_survives_a_restart(pg_cloud: Cloud, restart: PostgresRestart) -> None:
    cloud = pg_cloud
    path, data = _disk(cloud, "web", 32)  # 128 chunks of 256 KiB
    server = cloud.server("web", [path])
    _on_call(cloud.worker_runtime.services.repository.store, "put", 40, _cut(restart))
    item = _backup(cloud, server["id"])
    restart.wait_up()
    assert restart.happened
    assert item["status"] == "available", item["extend_info"]["fail_reason"]
    task = _task_of(cloud, checkpoint_item_id=item["id"])
    assert task.interruptions >= 1 and task.failures == 1, task
    assert _stored(cloud, item["id"]) == data
    # The interrupted attempt's references were released: the audit finds every count exact.
    report = cloud.env.services.repository.check(cloud.pid, read_data=True)
    assert report.ok, report


def test_restore_survives_a_restart(pg_cloud: Cloud, restart: PostgresRestart) -> None:
    cloud = pg_cloud
    path, data = _disk(cloud, "src", 32)
    item = _backup(cloud, cloud.server("src", [path])["id"])
    assert item["status"] == "available"
    target = cloud.server("dst", [cloud.blank("dst", 32)])
    _on_call(cloud.worker_runtime.services.repository.store, "get", 20, _cut(restart))
    r = cloud.start_restore(item, target)
    assert r.status_code == 200, r.text
    restore_id = r.json()["restore"]["id"]
    restart.wait_down()
    restart.wait_up()
    done = cloud.wait_restore(restore_id, timeout=180)
    assert done["status"] == "success", done
    with open(target["disks"][0]["path"], "rb") as f:
        assert f.read() == data


def test_deletion_survives_a_restart(pg_cloud: Cloud, restart: PostgresRestart) -> None:
    cloud = pg_cloud
    keep_path, keep_data = _disk(cloud, "keep", 4)
    keep = _backup(cloud, cloud.server("keep", [keep_path])["id"])
    gone_path, _ = _disk(cloud, "gone", 48)  # six reference batches of 8 MiB
    gone = _backup(cloud, cloud.server("gone", [gone_path])["id"])
    assert keep["status"] == gone["status"] == "available"
    _on_call(cloud.worker_runtime.services.repository.index, "release_next", 3, _cut(restart))
    r = cloud.env.client.delete(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{gone['checkpoint_id']}",
        headers=cloud.headers(),
    )
    assert r.status_code == 200, r.text
    task_id = r.headers["X-Operation-Log-Id"]
    restart.wait_down()
    restart.wait_up()
    store = cloud.env.services.tasks
    deadline = time.monotonic() + 180
    while not (task := store.get(task_id)).status.terminal:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert task is not None and task.status.value == "success", task.error_info
    assert task.interruptions >= 1 and task.failures == 1, task
    url = f"/v1/{cloud.pid}/checkpoint_items/{gone['id']}"
    assert cloud.env.client.get(url, headers=cloud.headers()).status_code == 404
    repo = cloud.env.services.repository
    assert repo.check(cloud.pid, read_data=True).ok
    assert _stored(cloud, keep["id"]) == keep_data
