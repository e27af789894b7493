"""`check_disks`: open a server's disk paths on the host that holds them, for a
registration made elsewhere (`services/inventory.py`, decision 0020)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from csbs.fileio.confined import Rules
from csbs.queue import Task, TaskContext
from csbs.services.inventory import open_paths


class CheckDisksHandler:
    """Opens each path beneath this worker's inventory roots, as a local registration
    would, and answers with what it found (a refusal fails the task with its reason)."""

    def __init__(self, rules: Rules) -> None:
        self._rules = rules

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None:
        params = ctx.task.params
        found = open_paths(
            [str(p) for p in params.get("paths", [])],
            self._rules,
            allow_hardlinks=bool(params.get("allow_hardlinks", False)),
        )
        return {"disks": [{"path": d.path, "size": d.size, "identity": d.identity} for d in found]}

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        return None

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        return None
