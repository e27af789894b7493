"""Backups and restores of libvirt domains (servers whose source is `libvirt`).

A running domain is read through a pull-mode backup job (`hypervisor.backup.PullBackup`):
a point-in-time export of each disk over NBD and a checkpoint named after the backup. The
next backup of the server is incremental against the checkpoint of its newest available
backup: a chunk the dirty bitmap says unchanged is that backup's manifest entry, not
read. It reads a disk in full, and says why in `extend_info.incremental_reason`, when
the chain cannot be trusted: no earlier backup with a checkpoint, the checkpoint or its
bitmap gone (a redefined domain, a host crash), the disk resized or replaced, a full read
asked for. After a backup, csbs's other checkpoints of the domain are deleted: only the
newest backup's is needed, so bitmaps never pile up.

A stopped domain is read through `qemu-nbd` (QEMU's view of each image, with its format).
Restores write the guest's bytes into each target disk through `qemu-nbd` with the
disk's own format, and `power_on` starts the domain.

The libvirt and libnbd bindings are imported here only, and this module only when a
libvirt server is backed up or restored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from csbs.domain import errors
from csbs.domain.backups import CONSISTENCY_APP, CONSISTENCY_CRASH, Backup
from csbs.domain.inventory import Disk, Server
from csbs.hypervisor import backup as vmb
from csbs.hypervisor.connection import open_connection, resolve_uri
from csbs.hypervisor.nbd import NbdExport
from csbs.hypervisor.restore import disk_target, power_on, require_stopped
from csbs.repository import errors as repo_errors
from csbs.repository.manifest import Manifest
from csbs.repository.writer import BackupWriter, DiskBackup
from csbs.services.backups import BackupRecorder
from csbs.services.container import Services
from csbs.tasks.vmsource import ExportChunks

log = logging.getLogger("csbs.tasks")


def connect(services: Services) -> Any:
    uri = resolve_uri(services.libvirt_uri)
    if uri is None:
        raise errors.InvalidState(
            "this worker has no libvirt (setting libvirt_uri) to reach the domain",
            code="CSBS.6046",
        )
    return open_connection(uri)


def lookup(conn: Any, server: Server) -> Any:
    try:
        return conn.lookupByUUIDString(server.id)
    except Exception as exc:
        raise errors.InvalidState(
            f"domain {server.name} ({server.id}) is not defined on this host", code="CSBS.6047"
        ) from exc


def _disk_facts(disk: Disk, size: int) -> dict[str, Any]:
    return {"target": disk.target, "source": disk.source, "format": disk.format, "size": size}


class VmRead:
    """The reading side of one VM backup (see the module's docstring)."""

    def __init__(
        self, services: Services, recorder: BackupRecorder, backup: Backup, server: Server
    ):
        self._s = services
        self._recorder = recorder
        self._backup = backup
        self._server = server
        self._stack = contextlib.ExitStack()
        self._job: vmb.PullBackup | vmb.OfflineRead | None = None
        self._previous: dict[str, Any] | None = None  # the newest backup's extra
        self._reason: str | None = None  # why not incremental (the whole backup)
        self._disk_reasons: dict[str, str] = {}
        self._disks: dict[str, dict[str, Any]] = {}
        self._incremental: dict[str, bool] = {}  # by disk backup id
        self.domain: Any = None

    # -- the job --------------------------------------------------------------------------

    def __enter__(self) -> VmRead:
        try:
            conn = connect(self._s)
            self._stack.callback(conn.close)
            self.domain = lookup(conn, self._server)
            targets = [d.target for d in self._server.disks if d.target and not d.unsupported]
            since = self._choose_previous()
            if self.domain.isActive():
                scratch = self._s.vm_scratch_dir or Path("/var/tmp/csbs-vm-scratch")
                scratch.mkdir(mode=0o711, parents=True, exist_ok=True)
                job: vmb.PullBackup | vmb.OfflineRead = vmb.PullBackup(
                    self.domain, scratch, self._backup.id, since=since, disks=targets
                )
            else:
                job = vmb.OfflineRead(self.domain, targets)
            self._job = job
            self._stack.enter_context(job)
            if since is not None and not job.outcome.incremental:
                self._reason = job.outcome.incremental_note or self._reason
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)

    def _choose_previous(self) -> str | None:
        """The checkpoint of the server's newest available VM backup, or None (and why)."""
        extras = self._recorder.recent_extras(self._server.id)
        if not extras:
            self._reason = "no earlier backup of this server to build on"
            return None
        if not self._backup.incremental:
            self._reason = "a full read was asked for"
            return None
        for extra in extras:
            vm = extra.get("vm")
            if isinstance(vm, dict) and extra.get("repository_backup_id"):
                checkpoint = vm.get("checkpoint")
                if not checkpoint:
                    self._reason = "the newest backup left no checkpoint (a stopped domain)"
                    return None
                if vm.get("domain") != self._server.id:
                    self._reason = "the newest backup is of another domain"
                    return None
                self._previous = extra
                return str(checkpoint)
        self._reason = "no earlier backup of this server to build on"
        return None

    @property
    def consistency(self) -> str:
        assert self._job is not None
        return (
            CONSISTENCY_APP
            if self._job.outcome.consistency == vmb.APP_CONSISTENT
            else CONSISTENCY_CRASH
        )

    # -- the disks ------------------------------------------------------------------------

    def write_disk(
        self,
        writer: BackupWriter,
        disk_backup_id: str,
        disk: Disk,
        *,
        over: str | None = None,
    ) -> DiskBackup:
        """Back up one disk of the domain; `over` is the repository backup a chunk that
        changed in part is stored over (the writer's deltas)."""
        assert self._job is not None
        if not disk.target or disk.unsupported:
            raise errors.InvalidState(
                f"disk {disk.name} cannot be backed up: {disk.unsupported or 'no target'}",
                code="CSBS.6048",
            )
        export = self._job.export(disk.target)
        previous, reason = self._previous_manifest(disk, export)
        if reason is not None:
            self._disk_reasons[disk.id] = reason
        source = ExportChunks(export, previous)
        result = writer.write_disk(disk.id, source, previous=over)
        self._incremental[disk_backup_id] = previous is not None
        self._disks[disk.id] = {
            **_disk_facts(disk, export.size),
            "bytes_read": export.bytes_read,
            "chunks_unchanged": source.chunks_unchanged,
        }
        return result

    def _previous_manifest(
        self, disk: Disk, export: NbdExport
    ) -> tuple[Manifest | None, str | None]:
        assert self._job is not None
        if self._previous is None or not self._job.outcome.incremental:
            return None, self._reason or "read in full"
        full = self._job.outcome.full_disks.get(disk.target or "")
        if full is not None:
            return None, full
        before = (self._previous.get("vm") or {}).get("disks", {}).get(disk.id)
        if not isinstance(before, dict):
            return None, "the disk is new since the previous backup"
        if before.get("source") != disk.source or before.get("target") != disk.target:
            return None, "the disk was replaced since the previous backup"
        if before.get("size") != export.size:
            return None, "the disk was resized since the previous backup"
        repo_id = str(self._previous["repository_backup_id"])
        try:
            manifest = self._s.repository.reader(self._backup.project_id).load_manifest(
                repo_id, disk.id
            )
        except repo_errors.RepositoryError as exc:
            return None, f"the previous backup's manifest is unreadable ({exc})"
        if manifest.logical_size != export.size:
            return None, "the disk was resized since the previous backup"
        if manifest.chunk_size != self._s.repository.open_project(self._backup.project_id)[1]:
            return None, "the repository's chunk size changed"
        return manifest, None

    def finish(self) -> dict[str, Any]:
        """Record the outcome, then drop the checkpoints no backup needs any more."""
        assert self._job is not None
        incremental = bool(self._incremental) and all(self._incremental.values())
        reasons = sorted(set(self._disk_reasons.values()))
        reason = None if incremental else (self._reason or "; ".join(reasons) or "read in full")
        checkpoint = (
            self._job.checkpoint
            if isinstance(self._job, vmb.PullBackup)
            and any(d.tracks_changes for d in self._job.disks)
            else None
        )
        vm = {
            "domain": self._server.id,
            "checkpoint": checkpoint,
            "disks": self._disks,
            "consistency_note": self._job.outcome.consistency_note,
            "disk_reasons": self._disk_reasons,
        }
        self._recorder.vm_summary(
            self._backup.id,
            incremental=incremental,
            reason=reason,
            vm=vm,
            incremental_disks=self._incremental,
        )
        if checkpoint is not None:
            removed = vmb.prune_checkpoints(self.domain, {checkpoint})
            if removed:
                log.info("checkpoints no backup needs removed: %s", ", ".join(removed))
        return {
            "incremental": incremental,
            "incremental_reason": reason or "",
            "consistency_note": self._job.outcome.consistency_note or "",
        }


@contextlib.contextmanager
def vm_targets(services: Services, server: Server) -> Iterator[Any]:
    """The target domain of a restore, checked stopped; yields the domain."""
    conn = connect(services)
    try:
        domain = lookup(conn, server)
        require_stopped(domain)
        yield domain
    finally:
        conn.close()


def restore_disk(
    services: Services, project_id: str, repo_id: str, disk_id: str, target: Disk, **kw: Any
) -> Any:
    """Write one disk of a backup into the domain's disk `target`, in its own format."""
    if not target.source or target.unsupported or target.format not in ("qcow2", "raw"):
        raise errors.InvalidInput(
            f"disk {target.name} cannot be restored onto: {target.unsupported or 'unsupported'}",
            code="CSBS.6014",
        )
    with disk_target(target.source, target.format) as export:
        return services.repository.restore(project_id, repo_id, disk_id, export, **kw)


__all__ = ["VmRead", "power_on", "restore_disk", "vm_targets"]
