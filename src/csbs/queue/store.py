"""The task queue's tables as one object: `TaskLifecycle` (enqueue, claim, leases, finish,
retry, hand back, reap; `lifecycle.py`) and `TaskReads` (get, search, count, queue
positions; `reads.py`). Their statements are in `statements.py`."""

from __future__ import annotations

import sqlalchemy as sa

from csbs.domain.clock import Clock
from csbs.queue.config import QueueConfig
from csbs.queue.lifecycle import TaskLifecycle
from csbs.queue.reads import TaskReads
from csbs.queue.registry import WorkerRegistry


class TaskStore(TaskLifecycle, TaskReads):
    """The queue's tables, handed an engine; safe to share between threads and processes.

    Enqueuers and workers use its lifecycle, callers that look at tasks its reads; the two
    share nothing but the engine."""

    def __init__(self, engine: sa.Engine, clock: Clock, config: QueueConfig) -> None:
        TaskLifecycle.__init__(self, engine, clock, config)
        TaskReads.__init__(self, engine)
        #: The deployment's workers, and which hosts have a live one.
        self.workers = WorkerRegistry(engine, clock, config.worker_stale_seconds)
