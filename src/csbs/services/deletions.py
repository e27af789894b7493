"""Deleting backups (CSBS B2): accepted synchronously, executed by deletion tasks.

At most `delete_concurrency_per_project` deletions run at once per project (the queue's
admission limit), the rest wait in order. A failed or timed-out deletion leaves the backup
in `error` with `fail_op = "delete"`; deleting it again resumes where it stopped, because
the repository keeps its release cursor.
"""

from __future__ import annotations

import re
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


_REF_COLUMNS = (
    "id",
    "project_id",
    "checkpoint_id",
    "status",
    "plan_id",
    "resource_id",
    "resource_name",
)


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
        # PostgreSQL accepts a DELETE in one statement: one round trip instead of five
        # (BEGIN, lock, mark, enqueue, COMMIT), the hot path of the DELETE benchmark, run
        # on the driver's cursor (`db.driver`).
        self._accept = None if db.is_sqlite else DriverStatement(db, self._build_accept())

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

    def _build_accept(self) -> sa.Select[Any]:
        parts = q.deletion_accept()
        t = parts.targets
        rows = (
            sa.select(
                t.c.task_id,
                t.c.project_id,
                sa.func.json_build_object("backup_id", t.c.id, type_=sa.JSON()),
                sa.literal(CSBS_PROVIDER_ID, sa.String()),
                t.c.checkpoint_id,
                t.c.id,
                t.c.plan_id,
                t.c.resource_id,
                t.c.resource_name,
            )
            .where(parts.ok)
            .order_by(*parts.target_order)
        )
        enqueued, notify = self._tasks.enqueue_each(rows, OperationType.DELETE)
        locked = parts.locked
        return (
            sa.select(
                *(locked.c[name] for name in _REF_COLUMNS),
                t.c.task_id,
                parts.ok.label("ok"),
                notify.label("notified"),
            )
            .select_from(locked.outerjoin(t, t.c.id == locked.c.id))
            .order_by(locked.c.created_at, locked.c.id)
            .add_cte(parts.marked, *enqueued)
        )

    def _delete_in_one_statement(
        self, project_id: str, checkpoint_id: str, item_ids: list[str] | None
    ) -> list[str]:
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
        backups = [q.ref_of(r) for r in rows]
        # The statement wrote only if its own checks passed; the same checks in Python say
        # which error to answer, and that they agree.
        targets = _targets(backups, project_id, checkpoint_id, item_ids)
        if not rows[0].ok:
            raise RuntimeError("the deletion statement refused what its checks accept")
        task_of = {r.id: r.task_id for r in rows}
        return [task_of[b.id] for b in targets]

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
