"""Limits and timings of the task queue, from settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class QueueConfig:
    """Limits and timings of the queue, from settings."""

    #: Running tasks per project, by operation type.
    limits: Mapping[str, int] = dataclasses.field(default_factory=dict)
    default_limit: int = 10
    #: Seconds from first start to deadline, by operation type.
    deadlines: Mapping[str, float] = dataclasses.field(default_factory=dict)
    default_deadline: float = 24 * 3600.0
    lease_seconds: float = 30.0
    max_attempts: int = 5
    retry_base_delay: float = 2.0
    retry_max_delay: float = 300.0
    #: A worker whose heartbeat is older than this is not alive.
    worker_stale_seconds: float = 60.0
    #: A task routed to a host with no live worker fails this long after its enqueue.
    start_deadline_seconds: float = 24 * 3600.0
    #: Ended tasks (operation logs) are removed this long after they ended.
    retention_seconds: float = 90 * 86400.0

    def limit_for(self, operation_type: str) -> int:
        return self.limits.get(operation_type, self.default_limit)

    def deadline_for(self, operation_type: str) -> float:
        return self.deadlines.get(operation_type, self.default_deadline)
