"""How busy the API process is, readable by the worker process `csbs serve` starts beside it.

A deletion costs several times the CPU of the DELETE call that accepted it, and the worker's
database sessions are not lowered in priority with the worker process (`worker_nice`). On a
machine whose cores are shared with PostgreSQL, tasks started while calls arrive take the
cores the calls need. So the API counts its calls in flight here, in shared memory, and the
embedded worker starts tasks more slowly while the count shows calls (see
`csbs.queue.worker.Worker`, `api_busy`).

Two doubles in a `multiprocessing.RawArray`: calls in flight, and when the last call ended
(`time.monotonic()`, one clock for every process of the machine). Only the API's event loop
writes; a reader may see a value a moment old, which only moves a task's start by as much.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.sharedctypes
import time
from typing import Any

#: The API counts as busy this long after its last call ended: calls from clients that
#: send their next one as soon as they have an answer arrive with gaps shorter than this.
QUIET_SECONDS = 0.05

_IN_FLIGHT = 0
_LAST_END = 1


class ApiActivity:
    """Calls in flight in this process's API, in memory shared with child processes."""

    def __init__(self, shared: Any | None = None) -> None:
        if shared is None:
            shared = multiprocessing.sharedctypes.RawArray(ctypes.c_double, 2)
            shared[_LAST_END] = -QUIET_SECONDS  # quiet from the start
        #: The shared array: pass it to a child process (spawn) and wrap it there again.
        self.shared: Any = shared

    def call_started(self) -> None:
        self.shared[_IN_FLIGHT] += 1

    def call_ended(self) -> None:
        self.shared[_IN_FLIGHT] -= 1
        self.shared[_LAST_END] = time.monotonic()

    def busy(self) -> bool:
        """Whether calls are being answered, or one ended less than QUIET_SECONDS ago."""
        in_flight: float = self.shared[_IN_FLIGHT]
        last_end: float = self.shared[_LAST_END]
        return in_flight > 0 or time.monotonic() - last_end < QUIET_SECONDS
