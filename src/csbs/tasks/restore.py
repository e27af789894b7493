"""The restore task: write each mapped disk backup onto the target server's disk."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from csbs.domain import errors
from csbs.domain.inventory import ServerSource
from csbs.queue import Task, TaskContext
from csbs.repository.reader import RestoreProgress
from csbs.services.container import Services
from csbs.services.inventory import open_disk
from csbs.services.restores import RestoreRecorder


class RestoreHandler:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._recorder = RestoreRecorder(services.clock)

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None:
        s = self._s
        restore = s.restores.get(None, str(ctx.params["restore_id"]))
        backup = s.backups.get(None, restore.backup_id)
        server = s.inventory.get(None, restore.server_id)
        repo_id = backup.extra.get("repository_backup_id")
        if not repo_id:
            raise errors.InvalidState("the backup holds no data to restore", code="CSBS.4000")
        sources = {d.id: d for d in backup.disks}
        targets = {d.id: d for d in server.disks}
        total = max(1, sum(sources[m.backup_id].source_size for m in restore.mappings))
        done = 0
        written = 0

        def on_progress(p: RestoreProgress) -> None:
            ctx.report(
                min(99, (done + p.position) * 100 // total), bytes_written=written + p.position
            )

        # A libvirt domain (stopped) is written through QEMU, each disk in its own format,
        # and started at the end if asked (tasks/vmbackup.py); other servers by fd.
        domain = None
        with contextlib.ExitStack() as stack:
            if server.source is ServerSource.LIBVIRT:
                from csbs.tasks import vmbackup

                domain = stack.enter_context(vmbackup.vm_targets(s, server))
            for m in restore.mappings:
                source = sources[m.backup_id]
                target = targets.get(m.volume_id)
                if target is None:
                    raise errors.InvalidInput(
                        f"disk {m.volume_id} is no longer on the server", code="CSBS.6014"
                    )
                try:
                    if domain is not None:
                        vmbackup.restore_disk(
                            s,
                            backup.project_id,
                            str(repo_id),
                            source.disk_id,
                            target,
                            progress=on_progress,
                            cancel=lambda: ctx.cancelled,
                        )
                    else:
                        # Opened once, beneath its root (never created), written only by fd.
                        with open_disk(server, target, s.disk_rules, write=True) as opened:
                            s.repository.restore(
                                backup.project_id,
                                str(repo_id),
                                source.disk_id,
                                opened.fd,
                                progress=on_progress,
                                cancel=lambda: ctx.cancelled,
                            )
                except Exception:
                    ctx.check_cancelled()
                    raise
                done += source.source_size
                written += source.source_size
                ctx.check_cancelled()
            if domain is not None and restore.power_on:
                vmbackup.power_on(domain)
        return {"bytes_written": written}

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        self._recorder.on_start(conn, task)

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        self._recorder.on_end(conn, task)
