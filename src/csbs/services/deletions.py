"""Deleting backups (CSBS B2): accepted synchronously, executed by deletion tasks.

At most `delete_concurrency_per_project` deletions run at once per project (the queue's
admission limit), the rest wait in order. A failed or timed-out deletion leaves the backup
in `error` with `fail_op = "delete"`; deleting it again resumes where it stopped, because
the repository keeps its release cursor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db.engine import Database
from csbs.db.queries import backups as q
from csbs.domain import errors
from csbs.domain.backups import (
    DELETABLE,
    BackupBusy,
    BackupRef,
    BackupStatus,
    CheckpointNotFound,
)
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.operations import OperationType
from csbs.domain.providers import CSBS_PROVIDER_ID
from csbs.queue import EnqueueRequest, Task, TaskStatus, TaskStore
from csbs.queue.jobs import Refs
from csbs.services.backups import joined_session

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_item_ids(values: Sequence[str]) -> list[str] | None:
    """`checkpoint_items` as one id, a comma-separated list, or the parameter repeated.

    Returns None when the parameter is absent (delete every backup of the record).

    Raises:
        InvalidInput: an empty or malformed id.
    """
    if not values:
        return None
    ids: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not _ID_RE.match(part):
                raise errors.InvalidInput(
                    "checkpoint_items must be a comma-separated list of backup ids"
                )
            if part not in ids:
                ids.append(part)
    return ids


class DeletionService:
    def __init__(self, db: Database, clock: Clock, tasks: TaskStore) -> None:
        self._db = db
        self._clock = clock
        self._tasks = tasks

    def delete(self, project_id: str, checkpoint_id: str, item_ids: list[str] | None) -> list[str]:
        """Accept the deletion of backups of a record (all of them when `item_ids` is None).

        All or nothing: every targeted backup goes to `waiting_delete` with one task each, in
        one transaction. Returns the task ids.

        Raises:
            CheckpointNotFound / BackupNotFound: unknown record, or an id not in it (404).
            BackupBusy: a targeted backup is not `available` or `error` (400 CSBS.2003).
        """
        with self._db.write() as s:
            backups = {b.id: b for b in q.refs_for_update(s, checkpoint_id=checkpoint_id)}
            if not backups or any(b.project_id != project_id for b in backups.values()):
                raise CheckpointNotFound(checkpoint_id)
            if item_ids is None:
                targets = list(backups.values())
            else:
                unknown = [i for i in item_ids if i not in backups]
                if unknown:
                    raise errors.BackupNotFound(unknown[0])
                targets = [backups[i] for i in item_ids]
            busy = [b for b in targets if b.status not in DELETABLE]
            if busy:
                raise BackupBusy(
                    f"Backup ({busy[0].id}) is {busy[0].status.value}; item in executing"
                )
            task_ids = self.enqueue(s, targets)
        self._tasks.poke()
        return task_ids

    def enqueue(self, s: orm.Session, targets: Sequence[BackupRef]) -> list[str]:
        """Move `targets` to `waiting_delete` with one deletion task each, in `s`'s
        transaction (the caller checked they are deletable and pokes after its commit)."""
        now = self._clock.now()
        task_ids = []
        for b in targets:
            task_id = new_id()
            q.mark(s, b.id, BackupStatus.WAITING_DELETE, now, task_id)
            self._tasks.enqueue(
                s.connection(),
                EnqueueRequest(
                    project_id=b.project_id,
                    operation_type=OperationType.DELETE,
                    params={"backup_id": b.id},
                    refs=Refs(
                        provider_id=CSBS_PROVIDER_ID,
                        checkpoint_id=b.checkpoint_id,
                        checkpoint_item_id=b.id,
                        plan_id=b.plan_id,
                        resource_id=b.resource_id,
                        resource_name=b.resource_name,
                    ),
                    task_id=task_id,
                ),
            )
            task_ids.append(task_id)
        return task_ids


class DeletionRecorder:
    """The deletion task's hooks, run in the queue's transactions."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        with joined_session(conn) as s:
            q.set_status(s, str(task.params["backup_id"]), BackupStatus.DELETING, self._clock.now())
            s.flush()

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        backup_id = str(task.params["backup_id"])
        now = self._clock.now()
        with joined_session(conn) as s:
            if task.status is TaskStatus.SUCCESS:
                # Gone: GET answers 404; when a record's last backup is gone, so is the record.
                q.delete_backup(s, backup_id)
                if task.refs.checkpoint_id:
                    q.delete_checkpoint_if_empty(s, task.refs.checkpoint_id)
            else:
                info = task.error_info or {}
                q.set_status(
                    s,
                    backup_id,
                    BackupStatus.ERROR,
                    now,
                    fail_op="delete",
                    fail_reason=str(info.get("message", "the deletion failed"))[:2000],
                    fail_code=str(info.get("code", "CSBS.9999")),
                )
            s.flush()
