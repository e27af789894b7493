"""The maintenance task: sweep one project's repository of chunks no backup references.

The queue admits one per project at a time; the sweep itself is safe beside backups and
deletions (rows are removed only at refcount zero past the grace, blob names first go to
the garbage list in the same transaction), and a sweep cut short by a crash leaves names
the next one deletes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from csbs.queue import Task, TaskContext
from csbs.services.container import Services


class MaintenanceHandler:
    def __init__(self, services: Services) -> None:
        self._s = services

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None:
        s = self._s
        project = ctx.task.project_id
        swept = s.repository.sweep(project)
        ctx.check_cancelled()
        pending = s.repository.pending_release(project)
        return {
            "swept_chunks": swept.chunks,
            "swept_bytes": swept.bytes,
            "pending_release_bytes": pending.stored_bytes,
            "sweep_grace_seconds": s.repository.settings.sweep_grace_seconds,
        }

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        return None

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        return None
