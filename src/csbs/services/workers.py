"""The deployment's workers as operators see them (`csbs worker list`, `GET /v3/workers`,
`csbs doctor`)."""

from __future__ import annotations

from csbs.domain.workers import WorkerInfo
from csbs.queue import TaskStore


class WorkerService:
    def __init__(self, store: TaskStore) -> None:
        self._registry = store.workers

    @property
    def stale_seconds(self) -> float:
        """A worker whose last heartbeat is older than this is not alive."""
        return self._registry.stale_seconds

    def list(self) -> list[WorkerInfo]:
        """Every registered worker (alive or not), by host; dead ones are forgotten a week
        after their last heartbeat."""
        return self._registry.list()

    def live_hosts(self) -> set[str]:
        """The hosts with at least one live worker."""
        return self._registry.live_hosts()
