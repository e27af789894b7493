"""The embedded workers of `csbs serve`, in a process of their own.

API calls are short and a caller waits on each; tasks are long and nobody waits on a single
step. In one process they would share one interpreter lock, and a deletion's database work
would stall the event loop answering calls. So `csbs serve` starts its workers as a child
process, at a lower CPU priority (`worker_nice`): when the cores are busy the kernel serves
the API first, and when they are idle the tasks get all of them. The child also sees how many
calls the API has in flight (`ApiActivity`, shared memory) and, while there are some, starts
at most one task per `worker_busy_claim_seconds`: its database sessions, which niceness
does not reach, then stay off the cores the calls need.

The child dies with its parent (Linux: PR_SET_PDEATHSIG), like the worker threads it
replaces did, so a `kill -9` of `csbs serve` leaves no worker behind; the tasks it ran are
reclaimed by lease as after any crash. On PostgreSQL the enqueue's notification wakes the
child at once; on SQLite, which has none, the parent's `TaskStore.poke` after an enqueue
does, through a pipe (and other processes' enqueues through the wake-up socket the child's
worker listens on, `queue/wake.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from typing import Any, Protocol

from csbs import logs
from csbs.app.activity import ApiActivity
from csbs.app.build import build, check_deployment, make_worker
from csbs.app.run import run_worker
from csbs.config import Settings

log = logging.getLogger("csbs.worker_child")

_PR_SET_PDEATHSIG = 1
#: Seconds the child gets, beyond the shutdown grace, to hand its tasks back before SIGKILL.
_EXIT_MARGIN_SECONDS = 10.0


class WorkerProcess:
    """One child process running a task worker over the same settings as this process."""

    def __init__(self, settings: Settings, activity: ApiActivity | None = None) -> None:
        self._settings = settings
        self._activity = activity
        self._process: multiprocessing.process.BaseProcess | None = None
        self._wake_fd: int | None = None

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, 0) + self._settings.worker_nice)
        self._process = ctx.Process(
            target=_child_main,
            args=(
                self._settings,
                niceness,
                reader,
                os.getpid(),
                None if self._activity is None else self._activity.shared,
            ),
            name="csbs-worker",
            daemon=False,
        )
        self._process.start()
        pid = self._process.pid
        assert pid is not None
        # Lowered here as well as in the child: at once, before the child has started threads
        # (on Linux every thread has its own niceness, inherited when it is created).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
        reader.close()
        self._wake_fd = writer.fileno()
        os.set_blocking(self._wake_fd, False)
        self._writer = writer  # keeps the write end open
        log.info("worker process started", extra={"pid": pid})

    def set(self) -> None:
        """Wake the child's idle workers (a `TaskStore` waker; never blocks: a full pipe
        wakes them anyway)."""
        if self._wake_fd is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._wake_fd, b"\0")

    def stop(self, grace: float) -> None:
        """Ask the child to stop (its running tasks get `grace` seconds), then wait for it."""
        process = self._process
        if process is None:
            return
        self._wake_fd = None  # no more wake-ups: the write end closes below
        if process.is_alive():
            process.terminate()  # SIGTERM: the worker's graceful stop
        process.join(grace + _EXIT_MARGIN_SECONDS)
        if process.is_alive():
            log.warning("worker process did not stop in time; killing it")
            process.kill()
            process.join()
        self._writer.close()
        self._process = None


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


class _Pokeable(Protocol):
    def wake_local(self) -> None: ...


def relay_wake_ups(fd: int, store: _Pokeable) -> None:
    """Wake `store`'s workers in this process for every batch of bytes read from `fd`,
    until the writer closes it (other processes heard of the enqueue from the sender)."""
    while True:
        try:
            got = os.read(fd, 4096)
        except OSError:
            return
        if not got:
            return
        store.wake_local()


def _child_main(
    settings: Settings,
    niceness: int,
    wake: multiprocessing.connection.Connection,
    parent_pid: int,
    activity: Any | None,
) -> None:
    _die_with_parent(parent_pid)
    os.setpriority(os.PRIO_PROCESS, 0, niceness)
    logs.configure(settings.log_level, json_lines=settings.log_json)
    runtime = build(settings)
    # The parent checked the same settings before it started this process; checking again
    # is one read and gives this runtime's repository the deployment's key.
    check_deployment(runtime)
    api_busy = None if activity is None else ApiActivity(activity).busy
    worker = make_worker(runtime, api_busy=api_busy)

    threading.Thread(
        target=relay_wake_ups,
        args=(wake.fileno(), runtime.services.tasks),
        name="csbs-wake-relay",
        daemon=True,
    ).start()
    run_worker(runtime, worker)
