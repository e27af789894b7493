"""What a tenant reads when a task fails on the repository, its store or the hypervisor.

Repository and blob-store errors carry what an operator needs (chunk ids, blob names,
store addresses), and so do the hypervisor's (host paths, sockets, libvirt's and QEMU's
text). A task's error is shown to the project (operation log, the backup's
`fail_reason`), so those errors become a plain message with a stable code here, and the
detail goes to the service's log under the task's id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from csbs.blobstore.errors import BlobStoreError
from csbs.domain import errors
from csbs.hypervisor.errors import HypervisorError, wrapping_kind
from csbs.queue import Handler, Task, TaskContext
from csbs.repository import errors as repo_errors

log = logging.getLogger("csbs.tasks")

_MESSAGES: tuple[tuple[type[Exception], str], ...] = (
    (
        repo_errors.ChunkNotFound,
        "Part of the backup's data is missing from the backup repository.",
    ),
    (
        repo_errors.IntegrityError,
        "The backup's data failed verification in the backup repository.",
    ),
    (
        repo_errors.ImageDigestMismatch,
        "The backup's data failed verification in the backup repository.",
    ),
    (
        repo_errors.InvalidManifest,
        "The backup's data failed verification in the backup repository.",
    ),
    (
        repo_errors.WrongKey,
        "The backup repository's keys do not open with the service's master key.",
    ),
    (BlobStoreError, "The backup repository's storage failed the operation."),
    (repo_errors.RepositoryError, "The backup repository failed the operation."),
)


def _in_log(message: str, task_id: str) -> str:
    return f"{message} The service's log has the details under operation log {task_id}."


def plain_error(e: Exception, task_id: str) -> errors.CsbsError | None:
    """The tenant's form of a repository, store or hypervisor error (None: not one of
    those)."""
    for kind, message in _MESSAGES:
        if isinstance(e, kind):
            return errors.InternalError(_in_log(message, task_id))
    if isinstance(e, HypervisorError):
        return errors.InternalError(_in_log(e.tenant, task_id), code=e.code)
    wrapper = wrapping_kind(e)  # raised by a binding where no message of ours wraps it
    if wrapper is not None:
        return errors.InternalError(_in_log(wrapper.tenant_message, task_id), code=wrapper.code)
    return None


class PlainErrors:
    """A handler whose repository, store and hypervisor errors reach the task as plain
    messages."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None:
        try:
            return self._handler.run(ctx)
        except Exception as e:
            plain = plain_error(e, ctx.task.id)
            if plain is None or isinstance(e, repo_errors.Cancelled):
                raise
            where = (
                "the repository"
                if isinstance(e, (repo_errors.RepositoryError, BlobStoreError))
                else "the hypervisor"
            )
            log.error("task failed in %s", where, exc_info=True, extra={"task_id": ctx.task.id})
            raise plain from e

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        self._handler.on_start(conn, task)

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        self._handler.on_end(conn, task)
