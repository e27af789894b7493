"""Deleting backups (CSBS B2): accepted synchronously, executed by deletion tasks.

At most `delete_concurrency_per_project` deletions run at once per project (the queue's
admission limit), the rest wait in order. A failed or timed-out deletion leaves the backup
in `error` with `fail_op = "delete"`; deleting it again resumes where it stopped, because
the repository keeps its release cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db.driver import DriverStatement
from csbs.db.engine import Database, joined_session
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


def _targets(
    backups: list[BackupRef], project_id: str, checkpoint_id: str, item_ids: list[str] | None
) -> list[BackupRef]:
    """The backups a DELETE targets among its record's `backups`, if it may go ahead.

    Raises:
        CheckpointNotFound / BackupNotFound: unknown record, or an id not in it (404).
        BackupBusy: a targeted backup is not `available` or `error` (400 CSBS.2003).
    """
    by_id = {b.id: b for b in backups}
    if not by_id or any(b.project_id != project_id for b in backups):
        raise CheckpointNotFound(checkpoint_id)
    if item_ids is None:
        targets = backups
    else:
        unknown = [i for i in item_ids if i not in by_id]
        if unknown:
            raise errors.BackupNotFound(unknown[0])
        targets = [by_id[i] for i in item_ids]
    busy = [b for b in targets if b.status not in DELETABLE]
    if busy:
        raise BackupBusy(f"Backup ({busy[0].id}) is {busy[0].status.value}; item in executing")
    return targets


class DeletionService:
    def __init__(self, db: Database, clock: Clock, tasks: TaskStore) -> None:
        self._db = db
        self._clock = clock
        self._tasks = tasks
        # PostgreSQL accepts a DELETE in one statement (`q.deletion_accept`), the hot path
        # of the DELETE benchmark, run on the driver's cursor (`db.driver`, decision 0011).
        self._accept = (
            None
            if db.is_sqlite
            else DriverStatement(
                db,
                q.deletion_accept(
                    lambda rows: tasks.enqueue_each(rows, OperationType.DELETE),
                    CSBS_PROVIDER_ID,
                ),
            )
        )

    def delete(self, project_id: str, checkpoint_id: str, item_ids: list[str] | None) -> list[str]:
        """Accept the deletion of backups of a record (all of them when `item_ids` is None).

        All or nothing: every targeted backup goes to `waiting_delete` with one task each, in
        one transaction. Returns the task ids.

        Raises:
            CheckpointNotFound / BackupNotFound: unknown record, or an id not in it (404).
            BackupBusy: a targeted backup is not `available` or `error` (400 CSBS.2003).
        """
        if self._accept is not None:
            task_ids = self._delete_in_one_statement(project_id, checkpoint_id, item_ids)
        else:
            with self._db.write() as s:
                backups = q.refs_for_update(s, checkpoint_id=checkpoint_id)
                targets = _targets(backups, project_id, checkpoint_id, item_ids)
                task_ids = self.enqueue(s, targets)
        self._tasks.poke()
        return task_ids

    def _delete_in_one_statement(
        self, project_id: str, checkpoint_id: str, item_ids: list[str] | None
    ) -> list[str]:
        """PostgreSQL: the statement checks, marks and enqueues, or changes nothing; the
        rows it answers say which error to raise when it refused."""
        assert self._accept is not None
        now = self._clock.now()
        rows: list[Any] = self._accept.rows(
            {
                "r_checkpoint": checkpoint_id,
                "d_ids": item_ids,
                "d_project": project_id,
                "d_now": now,
                "e_now": now,
            }
        )
        if not rows or not rows[0].ok:
            _targets([q.ref_of(r) for r in rows], project_id, checkpoint_id, item_ids)
            raise RuntimeError("the deletion statement refused what its checks accept")
        task_of = {r.id: r.task_id for r in rows if r.task_id is not None}
        order = item_ids if item_ids is not None else [r.id for r in rows]
        return [task_of[i] for i in order]

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
                q.forget_backup(s, backup_id, task.refs.checkpoint_id or None)
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
