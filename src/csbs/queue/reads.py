"""Reads of the task queue: one task, a page of a filtered list, a count, queue positions.

They run on the read-only engine (`csbs.sql.reads.reader`): statements in autocommit mode on
PostgreSQL, a non-locking transaction on SQLite. Nothing here writes or locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from csbs.domain import errors
from csbs.domain.operations import TaskFilter, TaskStatus
from csbs.domain.paging import Page, PageRequest
from csbs.queue import statements
from csbs.queue.jobs import Task
from csbs.queue.schema import tasks
from csbs.sql.paging import apply_page
from csbs.sql.reads import reader

SORT_COLUMNS: Mapping[str, sa.ColumnElement[Any]] = {
    "created_at": tasks.c.created_at,
    "started_at": tasks.c.started_at,
    "ended_at": tasks.c.ended_at,
    "status": tasks.c.status,
    "operation_type": tasks.c.operation_type,
    "id": tasks.c.id,
}


def filter_conditions(f: TaskFilter) -> list[sa.ColumnElement[bool]]:
    """The conditions of `f`, for a WHERE clause of `tasks`."""
    conds: list[sa.ColumnElement[bool]] = []
    for column, value in (
        (tasks.c.project_id, f.project_id),
        (tasks.c.operation_type, f.operation_type),
        (tasks.c.status, f.status.value if f.status else None),
        (tasks.c.checkpoint_id, f.checkpoint_id),
        (tasks.c.checkpoint_item_id, f.checkpoint_item_id),
        (tasks.c.plan_id, f.plan_id),
        (tasks.c.resource_id, f.resource_id),
    ):
        if value is not None:
            conds.append(column == value)
    if f.created_from is not None:
        conds.append(tasks.c.created_at >= f.created_from)
    if f.created_to is not None:
        conds.append(tasks.c.created_at <= f.created_to)
    return conds


class TaskReads:
    """What callers look at in the queue's tables. Handed an engine; safe to share between
    threads and processes."""

    def __init__(self, engine: sa.Engine) -> None:
        self._reader = reader(engine)

    def get(self, task_id: str) -> Task | None:
        with self._reader.begin() as conn:
            row = conn.execute(sa.select(*tasks.c).where(tasks.c.id == task_id)).first()
        return Task.from_row(row) if row else None

    def search(self, task_filter: TaskFilter, page: PageRequest) -> Page[Task]:
        """A page of tasks matching `task_filter`, in the page's sort order."""
        stmt = sa.select(*tasks.c).where(*filter_conditions(task_filter))
        with self._reader.begin() as conn:
            marker_values = None
            if page.marker is not None:
                marker_row = conn.execute(
                    sa.select(*[SORT_COLUMNS[k.key] for k in page.sort], tasks.c.seq).where(
                        tasks.c.id == page.marker, *filter_conditions(task_filter)
                    )
                ).first()
                marker_values = list(marker_row) if marker_row else None
            stmt = apply_page(
                stmt,
                page,
                columns=SORT_COLUMNS,
                tiebreak=tasks.c.seq,
                marker_values=marker_values,
                not_found=errors.InvalidInput(f"marker {page.marker} is not a task of this list"),
            )
            rows = conn.execute(stmt).all()
        items = [Task.from_row(r) for r in rows[: page.limit]]
        return Page(items=items, has_more=len(rows) > page.limit)

    def count(self, task_filter: TaskFilter) -> int:
        with self._reader.begin() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(tasks)
                    .where(*filter_conditions(task_filter))
                ).scalar_one()
            )

    def queue_positions(self, project_id: str) -> dict[str, int]:
        """Waiting task id -> 1-based position in its (project, type) queue."""
        position = sa.func.row_number().over(
            partition_by=tasks.c.operation_type, order_by=tasks.c.seq
        )
        with self._reader.begin() as conn:
            rows = conn.execute(
                sa.select(tasks.c.id, position).where(
                    tasks.c.project_id == project_id,
                    statements.status_is(TaskStatus.WAITING),
                )
            )
            return {task_id: int(pos) for task_id, pos in rows}
