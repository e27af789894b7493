"""Running a worker or the scheduler alone until SIGTERM/SIGINT (`csbs worker`,
`csbs scheduler`, and the worker child of `csbs serve`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from csbs.app.build import Runtime, make_host_watcher, make_scheduler
from csbs.queue import Worker
from csbs.repository import memtune


def run_scheduler(runtime: Runtime) -> None:
    """Run the policy scheduler alone until SIGTERM/SIGINT (it leads or stands by)."""
    scheduler = make_scheduler(runtime)
    _run_until_signal(runtime, scheduler.start, scheduler.stop)


def run_worker(runtime: Runtime, worker: Worker) -> None:
    """Run `worker` until SIGTERM/SIGINT, then stop it gracefully (running tasks get the
    shutdown grace to finish; the rest go back to waiting).

    This is what the process of `csbs worker` and the worker child of `csbs serve` run:
    their malloc is tuned for the backup and restore pipelines first, before the worker's
    threads start (`repository/memtune.py`).

    A worker on a host with libvirt (setting `libvirt_uri`) also keeps that host's domains
    in the inventory as servers of its host name (`services/discovery.HostWatcher`).
    """
    memtune.tune_malloc()
    watcher = make_host_watcher(runtime, worker.host)

    def start() -> None:
        if watcher is not None:
            watcher.start()
        worker.start()

    def stop() -> None:
        worker.stop(grace=runtime.settings.shutdown_grace_seconds)
        if watcher is not None:
            watcher.stop()

    _run_until_signal(runtime, start, stop)


def _run_until_signal(
    runtime: Runtime, start: Callable[[], None], stop: Callable[[], None]
) -> None:
    """start(); wait for SIGTERM/SIGINT; stop(); then close the runtime."""
    stopping = threading.Event()

    def _on_signal(_sig: int, _frame: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    start()
    try:
        stopping.wait()
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runtime.close()
