"""Deleting backups (B2): the status-code matrix, execution, deadline and resumption."""

from __future__ import annotations

import time
from typing import Any

from csbs.domain.identity import Role
from tests.tasks.conftest import PROVIDER, Cloud


def _backup(cloud: Cloud, name: str, mb: int = 2) -> dict[str, Any]:
    disk = cloud.blank(name, mb)
    with open(disk, "r+b") as f:
        f.write(name.encode() * 100_000)
    server = cloud.server(name, [disk])
    r = cloud.protect(server["id"], backup_name=name)
    item = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
    assert item["status"] == "available"
    return item


def _delete(cloud: Cloud, checkpoint_id: str, query: str = "", token: str | None = None) -> Any:
    url = f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{checkpoint_id}"
    return cloud.env.client.delete(
        url + (f"?{query}" if query else ""), headers=cloud.headers(token)
    )


def _gone(cloud: Cloud, backup_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cloud.env.client.get(
            f"/v1/{cloud.pid}/checkpoint_items/{backup_id}", headers=cloud.headers()
        )
        if r.status_code == 404:
            assert r.json()["error_code"] == "CSBS.3001"
            return
        time.sleep(0.05)
    raise AssertionError("backup not deleted")


def test_delete_matrix_and_execution(cloud: Cloud) -> None:
    a = _backup(cloud, "dela")
    b = _backup(cloud, "delb")
    reader = cloud.env.add_user("rey", "alpha", Role.READER)
    foreign = cloud.env.add_user("finn", "beta", Role.MEMBER)
    usage_with_both = cloud.env.services.repository.usage(cloud.pid).stored_bytes
    assert _delete(cloud, a["checkpoint_id"], token=reader).status_code == 403
    assert _delete(cloud, a["checkpoint_id"], token=foreign).status_code == 403
    r = cloud.env.client.delete(
        f"/v1/{cloud.pid}/providers/other/checkpoints/{a['checkpoint_id']}", headers=cloud.headers()
    )
    assert (r.status_code, r.json()["error_code"]) == (400, "CSBS.9001")
    r = _delete(cloud, "no-such-record")
    assert (r.status_code, r.json()["error_code"]) == (404, "CSBS.3001")
    # An id of another record, mixed with a valid one: 404 and nothing deleted.
    r = _delete(cloud, a["checkpoint_id"], f"checkpoint_items={a['id']},{b['id']}")
    assert (r.status_code, r.json()["error_code"]) == (404, "CSBS.3001")
    for bad in ("checkpoint_items=", "checkpoint_items=a,,b", "checkpoint_items=%3Cx%3E"):
        assert _delete(cloud, a["checkpoint_id"], bad).status_code == 400, bad
    assert cloud.env.client.get(
        f"/v1/{cloud.pid}/checkpoint_items/count", headers=cloud.headers()
    ).json() == {"count": 2}

    cloud.worker.stop(grace=1)  # hold the deletion in the queue to see its state
    r = _delete(cloud, a["checkpoint_id"], f"checkpoint_items={a['id']}")
    assert r.status_code == 200 and r.json() == {}
    task_id = r.headers["X-Operation-Log-Id"]
    item = cloud.env.client.get(
        f"/v1/{cloud.pid}/checkpoint_items/{a['id']}", headers=cloud.headers()
    ).json()
    assert item["checkpoint_item"]["status"] == "waiting_delete"
    again = _delete(cloud, a["checkpoint_id"])
    assert (again.status_code, again.json()["error_code"]) == (400, "CSBS.2003")
    log = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs/{task_id}", headers=cloud.headers()
    ).json()
    assert (
        log["operation_log"]["operation_type"] == "delete"
        and log["operation_log"]["status"] == "waiting"
    )
    assert log["operation_log"]["extra_info"]["queue_position"] == 1

    from csbs import app as composition

    worker = composition.make_worker(cloud.env.runtime, concurrency=2)
    worker.start()
    try:
        _gone(cloud, a["id"])
    finally:
        worker.stop(grace=5)
    done = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs/{task_id}", headers=cloud.headers()
    ).json()
    assert done["operation_log"]["status"] == "success"
    assert done["operation_log"]["extra_info"]["bytes_reclaimed"] > 0
    # The record of a's only backup is gone too; b is untouched.
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{a['checkpoint_id']}",
        headers=cloud.headers(),
    )
    assert r.status_code == 404
    assert (
        cloud.env.client.get(
            f"/v1/{cloud.pid}/checkpoint_items/{b['id']}", headers=cloud.headers()
        ).status_code
        == 200
    )
    assert cloud.env.client.get(
        f"/v1/{cloud.pid}/checkpoint_items/count", headers=cloud.headers()
    ).json() == {"count": 1}
    assert cloud.env.services.repository.usage(cloud.pid).stored_bytes < usage_with_both
    assert cloud.env.services.repository.check(cloud.pid).ok


def test_timeout_then_resume(cloud: Cloud, tmp_path: Any, db_url: str) -> None:
    a = _backup(cloud, "slow", mb=8)
    cloud.worker.stop(grace=1)
    from fastapi.testclient import TestClient

    from csbs import app as composition
    from csbs.api.app import create_app

    tiny = cloud.env.runtime.settings.model_copy(update={"delete_deadline_seconds": 0.000001})
    runtime = composition.build(tiny)
    worker = composition.make_worker(runtime, concurrency=1)
    api_runtime = composition.build(tiny, clock=cloud.env.clock)  # the tokens' clock
    with TestClient(create_app(api_runtime.services, api_runtime.edge)) as tiny_api:
        r = tiny_api.delete(
            f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{a['checkpoint_id']}",
            headers=cloud.headers(),
        )
    assert r.status_code == 200
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            item = cloud.env.client.get(
                f"/v1/{cloud.pid}/checkpoint_items/{a['id']}", headers=cloud.headers()
            ).json()
            if item["checkpoint_item"]["status"] == "error":
                break
            assert time.monotonic() < deadline, item
            time.sleep(0.05)
    finally:
        worker.stop(grace=2)
        runtime.close()
        api_runtime.close()
    ext = item["checkpoint_item"]["extend_info"]
    assert ext["fail_op"] == "delete" and "did not finish" in ext["fail_reason"]
    log = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs?checkpoint_item_id={a['id']}&operation_type=delete",
        headers=cloud.headers(),
    ).json()["operation_logs"]
    assert [x["status"] for x in log] == ["timeout"]
    # A second DELETE finishes it.
    assert _delete(cloud, a["checkpoint_id"]).status_code == 200
    worker = composition.make_worker(cloud.env.runtime, concurrency=1)
    worker.start()
    try:
        _gone(cloud, a["id"])
    finally:
        worker.stop(grace=2)
    assert cloud.env.services.repository.check(cloud.pid).ok
    assert cloud.env.services.repository.usage(cloud.pid).stored_bytes == 0


def test_record_with_a_backup_in_error_is_deleted_whole(cloud: Cloud) -> None:
    import dataclasses

    from csbs.db.queries import backups as q
    from csbs.domain.backups import BackupStatus
    from csbs.domain.ids import new_id

    good = _backup(cloud, "good")
    services = cloud.env.services
    first = services.backups.get(None, good["id"])
    # A second server's backup in the same record, which failed.
    failed = dataclasses.replace(
        first,
        id=new_id(),
        resource_id=new_id(),
        status=BackupStatus.ERROR,
        fail_op="backup",
        fail_reason="disk vanished",
        disks=(),
        tags=(),
    )
    with services.db.write() as s:
        q.add_backup(s, failed)
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/checkpoint_items?checkpoint_id={good['checkpoint_id']}",
        headers=cloud.headers(),
    )
    assert sorted(x["status"] for x in r.json()["checkpoint_items"]) == ["available", "error"]
    r = _delete(cloud, good["checkpoint_id"])
    assert r.status_code == 200
    assert len(r.headers["X-Operation-Log-Id"].split(",")) == 2
    _gone(cloud, good["id"])
    _gone(cloud, failed.id)
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{good['checkpoint_id']}",
        headers=cloud.headers(),
    )
    assert r.status_code == 404
    assert services.repository.check(cloud.pid).ok
