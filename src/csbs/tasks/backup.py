"""The backup task: read every disk of a server through the repository writer."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from csbs.domain import errors
from csbs.domain.backups import CONSISTENCY_CRASH, CONSISTENCY_NONE, FileFacts
from csbs.domain.inventory import ServerSource
from csbs.queue import Task, TaskContext
from csbs.repository.writer import BackupProgress
from csbs.services.backups import BackupRecorder
from csbs.services.container import Services
from csbs.services.inventory import open_disk
from csbs.tasks.snapshot import point_in_time

#: How often the backup record's progress is written (the task's is throttled separately).
PROGRESS_INTERVAL_SECONDS = 2.0


class BackupHandler:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._recorder = BackupRecorder(services.db, services.clock)

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None:
        s = self._s
        backup = s.backups.get(None, str(ctx.params["backup_id"]))
        server = s.inventory.get(None, backup.resource_id)
        project = backup.project_id
        # An earlier attempt died half-way: release what it took, then write afresh.
        for earlier in range(1, ctx.attempt):
            s.repository.delete_backup(
                project, self._recorder.repository_backup_id(backup, earlier)
            )
        repo_id = self._recorder.repository_backup_id(backup, ctx.attempt)
        disks = {d.id: d for d in server.disks}
        total = max(1, sum(d.source_size for d in backup.disks))
        done = 0
        last_saved = 0.0
        counters = {"bytes_read": 0, "bytes_new": 0, "bytes_reused": 0, "bytes_stored": 0}
        base = dict(counters)

        def on_progress(p: BackupProgress) -> None:
            nonlocal last_saved
            counters.update(
                bytes_read=base["bytes_read"] + p.read_bytes,
                bytes_new=base["bytes_new"] + p.new_bytes,
                bytes_reused=base["bytes_reused"] + p.reused_bytes,
                bytes_stored=base["bytes_stored"] + p.stored_bytes,
            )
            percent = min(99, (done + p.position) * 100 // total)
            ctx.report(percent, **counters)
            now = time.monotonic()
            if now - last_saved >= PROGRESS_INTERVAL_SECONDS:
                last_saved = now
                self._recorder.progress(backup.id, percent)

        writer = s.repository.backup_writer(
            project, repo_id, progress=on_progress, cancel=lambda: ctx.cancelled
        )
        consistency = CONSISTENCY_CRASH
        self._recorder.started(backup.id, repo_id, consistency)
        started = time.monotonic()
        # A backup asked to be full (`incremental` false: the API, `--full-read`, a
        # policy's option) reads every disk; otherwise an image file whose facts equal
        # those an earlier backup recorded is that backup's image again, not read.
        # A libvirt domain is read through its hypervisor (tasks/vmbackup.py), the rest
        # through file descriptors.
        vm = None
        if server.source is ServerSource.LIBVIRT:
            from csbs.tasks.vmbackup import VmRead

            vm = VmRead(s, self._recorder, backup, server)
        with vm or contextlib.nullcontext():
            if vm is not None:
                consistency = vm.consistency
                self._recorder.started(backup.id, repo_id, consistency)
            previous = (
                self._recorder.previous_disks(server.id)
                if backup.incremental and vm is None
                else {}
            )
            # A disk read again is stored over its image in the latest backup: a chunk
            # that changed in part as the sub-blocks that changed (the repository's deltas).
            over = self._recorder.previous_image(server.id) if backup.incremental else None
            facts: dict[str, FileFacts] = {}
            unchanged: list[str] = []
            for disk_backup in backup.disks:
                disk = disks.get(disk_backup.disk_id)
                if disk is None:
                    raise errors.InvalidState(
                        f"disk {disk_backup.disk_id} was removed from server {server.id}",
                        code="CSBS.6007",
                    )
                t0 = time.monotonic()
                if vm is not None:
                    try:
                        result = vm.write_disk(writer, disk_backup.id, disk, over=over)
                    except Exception:
                        ctx.check_cancelled()
                        raise
                else:
                    # Opened once, beneath its root, and read only through this fd from here on.
                    with (
                        open_disk(server, disk, s.disk_rules, write=False) as opened,
                        point_in_time(opened) as (source, got),
                    ):
                        result = None
                        if not opened.is_block:
                            now = s.clock.now()
                            taken = round(now.timestamp() * 1_000_000) * 1000
                            facts[disk.id] = FileFacts.of(os.fstat(opened.fd), taken)
                            before = previous.get(disk.id)
                            if before is not None and facts[disk.id].unchanged_since(before[1]):
                                result = writer.reuse_disk(disk_backup.disk_id, before[0])
                                if result is not None:
                                    unchanged.append(disk.id)
                        if result is None and got == CONSISTENCY_NONE:
                            consistency = CONSISTENCY_NONE
                        try:
                            if result is None:
                                result = writer.write_disk(
                                    disk_backup.disk_id, source, previous=over
                                )
                        except Exception:
                            ctx.check_cancelled()  # a cancelled write is cancelled, not failed
                            raise
                assert result is not None
                p = result.progress
                self._recorder.disk_done(
                    disk_backup.id,
                    logical=p.total_bytes,
                    stored=p.stored_bytes,
                    new=p.new_bytes,
                    reused=p.reused_bytes,
                    seconds=time.monotonic() - t0,
                )
                done += disk_backup.source_size
                for key, value in (
                    ("bytes_read", p.read_bytes),
                    ("bytes_new", p.new_bytes),
                    ("bytes_reused", p.reused_bytes),
                    ("bytes_stored", p.stored_bytes),
                ):
                    base[key] += value
                ctx.check_cancelled()
            s.repository.seal_backup(project, repo_id)
            vm_outcome = vm.finish() if vm is not None else {}
        self._recorder.started(backup.id, repo_id, consistency)
        self._recorder.read_summary(backup.id, facts, unchanged, base["bytes_read"])
        seconds = time.monotonic() - started
        return {
            **base,
            "consistency": consistency,
            "unchanged_disks": unchanged,
            **vm_outcome,
            "speed_bytes_per_second": round(total / seconds) if seconds > 0 else 0,
        }

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        return None

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        self._recorder.on_end(conn, task)
        self._s.policies.after_backup(conn, task)
