"""Operation logs: the task records as callers see them (spec §11.5)."""

from __future__ import annotations

import dataclasses
from typing import Any

from csbs.domain import errors
from csbs.domain.paging import Page, PageRequest
from csbs.domain.workers import no_live_worker
from csbs.queue import Task, TaskFilter, TaskStatus, TaskStore

SORT_KEYS = frozenset({"created_at", "started_at", "ended_at", "status", "operation_type", "id"})
DEFAULT_SORT = "created_at:desc"


@dataclasses.dataclass(frozen=True)
class OperationLog:
    task: Task
    #: 1-based place in its project's queue while waiting, else None.
    queue_position: int | None
    #: Why a waiting task cannot start now (no live worker on its host), else None.
    waiting_reason: str | None = None

    @property
    def extra_info(self) -> dict[str, Any]:
        extra = dict(self.task.extra_info)
        extra["progress"] = self.task.progress
        if self.queue_position is not None:
            extra["queue_position"] = self.queue_position
        if self.waiting_reason is not None:
            extra["waiting_reason"] = self.waiting_reason
        return extra


class OperationLogService:
    def __init__(self, store: TaskStore) -> None:
        self._store = store

    def get(self, project_id: str | None, task_id: str) -> OperationLog:
        """One task of `project_id` (None: any project, for admins).

        Raises:
            TaskNotFound: unknown, or another project's (existence is not revealed).
        """
        task = self._store.get(task_id)
        if task is None or (project_id is not None and task.project_id != project_id):
            raise errors.TaskNotFound(f"task not found: {task_id}")
        position = None
        if task.status is TaskStatus.WAITING:
            position = self._store.queue_positions(task.project_id).get(task.id)
        return OperationLog(task, position, self._reasons([task]).get(task.id))

    def search(self, task_filter: TaskFilter, page: PageRequest) -> Page[OperationLog]:
        result = self._store.search(task_filter, page)
        positions: dict[str, int] = {}
        for project_id in {t.project_id for t in result.items if t.status is TaskStatus.WAITING}:
            positions.update(self._store.queue_positions(project_id))
        reasons = self._reasons(result.items)
        return Page(
            items=[OperationLog(t, positions.get(t.id), reasons.get(t.id)) for t in result.items],
            has_more=result.has_more,
        )

    def _reasons(self, items: list[Task]) -> dict[str, str]:
        """Task id -> why it waits, for the waiting tasks routed to a host that has no live
        worker now (read when shown, so it goes as soon as a worker of the host appears)."""
        routed = [t for t in items if t.status is TaskStatus.WAITING and t.route is not None]
        if not routed:
            return {}
        live = self._store.workers.live_hosts()
        return {t.id: no_live_worker(t.route) for t in routed if t.route and t.route not in live}
