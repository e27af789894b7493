"""A failed task tells its project what failed in plain words and where the log has the
detail; driver text, chunk ids, blob names and store addresses stay in the service's log."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
import sqlalchemy.exc

from csbs.blobstore.errors import StoreUnavailable
from tests.tasks.conftest import Cloud

SECRET_URL = "http://10.0.0.7:9000/csbs-bucket/repo/projects/"
DRIVER_TEXT = (
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "pk_x"'
    "\n(Background on this error at: https://sqlalche.me/e/20/gkpj)"
)


def _backup(cloud: Cloud) -> dict[str, Any]:
    disk = cloud.blank("d", 2)
    disk.write_bytes(os.urandom(2 << 20))
    server = cloud.server("web", [disk])
    r = cloud.protect(server["id"])
    assert r.status_code == 200, r.text
    return cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])


def _operation_log(cloud: Cloud, task_id: str) -> dict[str, Any]:
    r = cloud.env.client.get(f"/v1/{cloud.pid}/operation_logs/{task_id}", headers=cloud.headers())
    assert r.status_code == 200, r.text
    return dict(r.json()["operation_log"])


def _task_id_of_backup(cloud: Cloud, backup_id: str) -> str:
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs?checkpoint_item_id={backup_id}", headers=cloud.headers()
    )
    (log,) = r.json()["operation_logs"]
    return str(log["id"])


def _assert_plain(text: str, task_id: str, *internals: str) -> None:
    assert f"operation log {task_id}" in text, text
    for internal in internals:
        assert internal not in text, text


def test_a_store_failure_reads_plainly(cloud: Cloud, caplog: pytest.LogCaptureFixture) -> None:
    store = cloud.worker_runtime.services.repository.store

    def refuse(name: str, data: Any) -> None:
        raise StoreUnavailable(f"PUT {SECRET_URL}{name}: connection refused")

    store.put = refuse  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="csbs.tasks"):
        item = _backup(cloud)
    assert item["status"] == "error"
    task_id = _task_id_of_backup(cloud, item["id"])
    reason = item["extend_info"]["fail_reason"]
    assert reason.startswith("The backup repository's storage failed the operation.")
    _assert_plain(reason, task_id, SECRET_URL, "chunks/", "StoreUnavailable")
    error = _operation_log(cloud, task_id)["error_info"]
    _assert_plain(error["message"], task_id, SECRET_URL)
    # The operator finds the detail in the log, under the task's id.
    detail = [r for r in caplog.records if getattr(r, "task_id", None) == task_id]
    assert any(SECRET_URL in (r.exc_text or "") for r in detail), "the detail was not logged"


def test_a_database_error_reads_plainly(cloud: Cloud) -> None:
    index = cloud.worker_runtime.services.repository.index

    def broken(*args: Any, **kw: Any) -> Any:
        raise sqlalchemy.exc.IntegrityError("INSERT INTO refs ...", {}, Exception(DRIVER_TEXT))

    index.take_refs = broken  # type: ignore[method-assign]
    item = _backup(cloud)
    assert item["status"] == "error"
    task_id = _task_id_of_backup(cloud, item["id"])
    reason = item["extend_info"]["fail_reason"]
    _assert_plain(reason, task_id, "psycopg", "sqlalche.me", "duplicate key", "INSERT")
    assert item["extend_info"]["fail_code"]["Code"] == "CSBS.9999"


def test_missing_data_reads_plainly(cloud: Cloud) -> None:
    item = _backup(cloud)
    assert item["status"] == "available"
    repo = cloud.env.services.repository
    chunk = next(n for n in repo.store.list("") if "/chunks/" in n)
    repo.store.delete(chunk)
    target = cloud.server("t", [cloud.blank("t", 2)])
    r = cloud.start_restore(item, target)
    assert r.status_code == 200, r.text
    assert cloud.wait_restore(r.json()["restore"]["id"])["status"] == "fail"
    logs = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs?operation_type=restore", headers=cloud.headers()
    ).json()["operation_logs"]
    (log,) = [log for log in logs if log["status"] == "failed"]
    task_id = log["id"]
    message = _operation_log(cloud, task_id)["error_info"]["message"]
    assert message.startswith("Part of the backup's data is missing")
    chunk_id = chunk.rsplit("/", 1)[-1].split(".")[0]
    _assert_plain(message, task_id, chunk_id, "ChunkNotFound", "chunks/")
