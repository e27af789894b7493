"""Workers as the deployment knows them: each registers and heartbeats (`queue/registry.py`)."""

from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """One worker process (`csbs worker`, or the worker child of `csbs serve`)."""

    id: str
    host: str
    version: str
    pid: int
    #: tasks it runs at once at most
    slots: int
    #: tasks it ran at its last heartbeat
    running: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    #: its last heartbeat is younger than the deployment's `worker_stale_seconds`
    alive: bool


def no_live_worker(host: str) -> str:
    """What a task routed to `host` says while no live worker serves that host."""
    return f"no live worker on host {host}"
