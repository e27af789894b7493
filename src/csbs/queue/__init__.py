"""A durable task queue in the metadata database, with per-project admission control.

It knows nothing about backups: handlers (in `csbs.tasks`) are handed to the worker.
"""

from __future__ import annotations

from csbs.domain.operations import TaskFilter, TaskStatus
from csbs.queue.config import QueueConfig
from csbs.queue.context import RetryLater, TaskCancelled, TaskContext
from csbs.queue.jobs import EnqueueRequest, Task
from csbs.queue.store import TaskStore
from csbs.queue.worker import Handler, Worker

__all__ = [
    "EnqueueRequest",
    "Handler",
    "QueueConfig",
    "RetryLater",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskFilter",
    "TaskStatus",
    "TaskStore",
    "Worker",
]
