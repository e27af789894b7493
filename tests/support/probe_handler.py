"""A task handler for engine tests: logs entry and exit, detects concurrent runs of a task.

Behaviour comes from the task's params:
  sleep            seconds to work (cancellable)
  sleep_first      seconds to work on attempt 1 only (to be killed mid-task)
  hang             ignore cancellation while "working"
  fail             raise with this message
  retry_until      raise RetryLater until this attempt number
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from csbs.queue import RetryLater, Task, TaskContext


class ProbeHandler:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        (log_dir / "locks").mkdir(parents=True, exist_ok=True)

    def _log(self, line: str) -> None:
        fd = os.open(self.log_dir / f"{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None:
        task = ctx.task
        # An advisory lock, not a marker file: the kernel drops it when a holder is killed,
        # so only a live concurrent run of the same task can make it fail.
        fd = os.open(self.log_dir / "locks" / task.id, os.O_CREAT | os.O_WRONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._log(f"overlap {task.id}")
            raise
        self._log(f"enter {task.id} {ctx.attempt} {time.time():.6f} {task.project_id}")
        try:
            p = ctx.params
            seconds = float(p.get("sleep", 0))
            if ctx.attempt == 1:
                seconds += float(p.get("sleep_first", 0))
            if p.get("hang"):
                time.sleep(seconds)
            elif seconds:
                end = time.monotonic() + seconds
                while (left := end - time.monotonic()) > 0:
                    ctx.report(50, slept=seconds - left)
                    ctx.wait(min(left, 0.1))
            if ctx.attempt < int(p.get("retry_until", 0)):
                raise RetryLater("not yet", delay=0.01)
            if p.get("fail"):
                raise ValueError(p["fail"])
            return {"handled_by": os.getpid(), "attempt": ctx.attempt}
        finally:
            self._log(f"exit {task.id} {ctx.attempt} {time.time():.6f} {task.project_id}")
            os.close(fd)

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        return None

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        return None


def read_log(log_dir: Path) -> list[list[str]]:
    """Every line any probe wrote, split into words."""
    lines: list[list[str]] = []
    for f in sorted(log_dir.glob("*.log")):
        lines += [line.split() for line in f.read_text().splitlines() if line]
    return lines


def max_concurrency(lines: list[list[str]], project: str | None = None) -> int:
    """The most handler runs that overlapped in time (optionally within one project)."""
    events: list[tuple[float, int]] = []
    for words in lines:
        if words[0] in ("enter", "exit") and (project is None or words[4] == project):
            # Exits sort before entries at the same instant: touching intervals do not overlap.
            events.append((float(words[3]), 1 if words[0] == "enter" else -1))
    events.sort(key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
