"""Repository maintenance: a periodic task per project sweeps what no backup references.

A deletion drops its backup's chunks to refcount zero; their space comes back when a
sweep removes them, after `sweep_grace_seconds` (which outlasts any upload in flight).
The scheduler's leader calls `enqueue_due` once per `interval`: every project whose
repository has something a sweep would release now gets one maintenance task, unless one
is already waiting or running (and the queue admits one per project at a time). So the
space of a deleted backup's unshared chunks is back within the grace plus one interval
(plus a scheduler tick), with nothing else happening.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from csbs.domain.clock import Clock
from csbs.domain.operations import OperationType, TaskFilter, TaskStatus
from csbs.queue import EnqueueRequest, TaskStore
from csbs.repository import Repository

log = logging.getLogger("csbs.maintenance")

#: Seconds from a maintenance task's first start to its deadline.
DEADLINE_SECONDS = 3600.0


@dataclasses.dataclass(frozen=True)
class Space:
    """A project's repository space: what its backups hold, and what waits for release."""

    stored_bytes: int
    pending_release_bytes: int
    pending_release_chunks: int
    #: When the last of the pending bytes will have been released at the latest (the
    #: grace after the last chunk dropped to zero, plus one maintenance interval); None
    #: when nothing is pending.
    release_by: dt.datetime | None


class MaintenanceService:
    def __init__(
        self, tasks: TaskStore, repository: Repository, clock: Clock, interval_seconds: float
    ) -> None:
        self._tasks = tasks
        self._repository = repository
        self._clock = clock
        self.interval = dt.timedelta(seconds=interval_seconds)

    def space(self, project_id: str) -> Space:
        repository = self._repository
        pending = repository.pending_release(project_id)
        release_by = (
            pending.newest + repository.grace + self.interval
            if pending.newest is not None
            else None
        )
        return Space(
            repository.usage(project_id).stored_bytes,
            pending.stored_bytes,
            pending.chunks,
            release_by,
        )

    def pending(self, project_id: str) -> tuple[int, dt.datetime | None]:
        """(bytes pending release, when released at the latest), for the quota view."""
        space = self.space(project_id)
        return space.pending_release_bytes, space.release_by

    def _queued(self, project_id: str) -> bool:
        return any(
            self._tasks.count(
                TaskFilter(
                    project_id=project_id,
                    operation_type=OperationType.MAINTENANCE.value,
                    status=status,
                )
            )
            for status in (TaskStatus.WAITING, TaskStatus.RUNNING)
        )

    def enqueue(self, project_id: str) -> str | None:
        """Enqueue a maintenance task for the project unless one waits or runs already;
        returns its id, or None."""
        if self._queued(project_id):
            return None
        task = self._tasks.enqueue_one(
            EnqueueRequest(
                project_id=project_id,
                operation_type=OperationType.MAINTENANCE,
                deadline_seconds=DEADLINE_SECONDS,
            )
        )
        return task.id

    def enqueue_due(self) -> list[str]:
        """One maintenance task for each project whose sweep is due (see the module)."""
        enqueued = []
        for project_id in self._repository.projects():
            if not self._repository.sweep_due(project_id):
                continue
            task_id = self.enqueue(project_id)
            if task_id is not None:
                log.info(
                    "maintenance enqueued", extra={"project_id": project_id, "task_id": task_id}
                )
                enqueued.append(project_id)
        return enqueued
