"""The deletion task: release a backup's references in the repository, then forget it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from csbs.queue import Task, TaskContext
from csbs.repository.reclaim import DeleteProgress
from csbs.services.container import Services
from csbs.services.deletions import DeletionRecorder


def repository_backups(backup_id: str, recorded: str) -> list[str]:
    """Every repository backup the backup's attempts may have written (`<id>.<n>`), given
    the one its last attempt `recorded`."""
    _, _, attempt = recorded.rpartition(".")
    last = int(attempt) if attempt.isdigit() else 0
    # A backup task that died before recording its attempt may have written one more.
    return [f"{backup_id}.{n}" for n in range(1, max(last, 1) + 2)]


class DeleteHandler:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._recorder = DeletionRecorder(services.clock)

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None:
        s = self._s
        backup_id = str(ctx.params["backup_id"])
        project, recorded = s.backups.repository_record(backup_id)
        reclaimed = 0
        names = repository_backups(backup_id, recorded)
        for i, name in enumerate(names):

            def on_progress(p: DeleteProgress, i: int = i) -> None:
                share = (i + (p.released / p.total if p.total else 1)) / len(names)
                ctx.report(min(99, int(share * 100)), batches_released=p.released)

            try:
                result = s.repository.delete_backup(
                    project, name, progress=on_progress, cancel=lambda: ctx.cancelled
                )
            except Exception:
                ctx.check_cancelled()  # a cancelled deletion reads as cancelled, not failed
                raise
            ctx.check_cancelled()
            reclaimed += result.freed.stored_bytes
        # Chunks unreferenced for longer than the grace go now; this deletion's own go with
        # a later sweep (the grace protects uploads in flight), and that is reported.
        swept = s.repository.sweep(project)
        return {
            # The project's usage went down by this much (its own releases only: deletions
            # running beside it in the project do not count here).
            "bytes_reclaimed": reclaimed,
            "swept_chunks": swept.chunks,
            "swept_bytes": swept.bytes,
            "sweep_grace_seconds": s.repository.settings.sweep_grace_seconds,
        }

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        self._recorder.on_start(conn, task)

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        self._recorder.on_end(conn, task)
