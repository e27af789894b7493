"""What a handler is given while it runs, and the exceptions it may raise to steer the engine."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any

from csbs.queue.jobs import Task


class CancelReason(enum.StrEnum):
    DEADLINE = "deadline"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"
    REQUESTED = "requested"


class TaskCancelled(Exception):
    """Raised by `TaskContext.check_cancelled` when the handler must stop."""

    def __init__(self, reason: CancelReason) -> None:
        super().__init__(f"task cancelled: {reason.value}")
        self.reason = reason


class RetryLater(Exception):
    """Raised by a handler for a transient failure: the task runs again after `delay` seconds."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class TaskContext:
    """Handed to a handler: the task, its attempt number, progress and cancellation.

    Handlers must be idempotent: attempt N may find the work of attempt N-1 half done.
    """

    def __init__(self, task: Task, report: Callable[[int | None, dict[str, Any]], None]) -> None:
        self.task = task
        self._report = report
        self._cancelled = threading.Event()
        self._reason: CancelReason | None = None

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 after a crash or retry, and so on."""
        return self.task.attempts

    @property
    def params(self) -> Any:
        return self.task.params

    def report(self, percent: int | None = None, **counters: Any) -> None:
        """Record progress (0-100) and counters into the task's `extra_info`.

        Cheap to call often: writes are throttled.
        """
        self._report(percent, counters)

    def cancel(self, reason: CancelReason) -> None:
        if self._reason is None:
            self._reason = reason
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def cancel_reason(self) -> CancelReason | None:
        return self._reason

    def check_cancelled(self) -> None:
        """Raise TaskCancelled if the task must stop (deadline, shutdown, lost lease)."""
        if self._cancelled.is_set():
            raise TaskCancelled(self._reason or CancelReason.REQUESTED)

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early (with TaskCancelled) on cancellation."""
        if self._cancelled.wait(seconds):
            self.check_cancelled()
