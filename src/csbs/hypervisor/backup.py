"""Point-in-time reads of a libvirt domain's disks: pull-mode backups and checkpoints.

`PullBackup` is a context manager around one libvirt pull-mode backup job
(`virDomainBackupBegin`): QEMU exports a point-in-time view of each disk over NBD on a
unix socket in a scratch directory of its own (image fleecing: guest writes to regions
not yet read are first copied to a scratch file there), while the guest keeps running.
The job also creates a checkpoint named after the backup (`csbs-<backup id>`: a
persistent dirty bitmap in each qcow2 disk); given the checkpoint of an earlier backup,
the export also carries the bitmap of what changed since, and the backup is incremental.

On every way out the job is aborted and the scratch directory removed; if the body
failed, the checkpoint it created is deleted too. A job or scratch directory left by a
worker that died (kill -9) is cleaned up by the next attempt before it begins.

Consistency: crash-consistent; where the guest agent answers, the guest's file systems
are frozen just around `BackupBegin` (the instant the checkpoint is taken) and thawed on
every path, and the backup is application-consistent. A freeze that fails falls back to
crash-consistent, with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt

from csbs.hypervisor.errors import HypervisorError
from csbs.hypervisor.nbd import NbdExport, QemuNbd

log = logging.getLogger("csbs.hypervisor")

# libvirt prints every error it raises to stderr unless a handler takes them: they are
# raised as exceptions here, and logged where they matter.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

CHECKPOINT_PREFIX = "csbs-"
APP_CONSISTENT = "app_consistent"
CRASH_CONSISTENT = "crash_consistent"
DIRTY_EXPORT = "csbs-dirty"
AGENT_TIMEOUT_SECONDS = 10
THAW_ATTEMPTS = 3
JOB_REFUSED = "The hypervisor refused the backup job."
SCRATCH_UNUSABLE = "The host's scratch space for live backups is not usable by the hypervisor."


def checkpoint_name(backup_id: str) -> str:
    return f"{CHECKPOINT_PREFIX}{backup_id}"


_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the final NUL


def scratch_dir(scratch_root: str | os.PathLike[str], backup_id: str) -> Path:
    """The backup's own scratch directory: a short name (the NBD socket lies in it)."""
    return Path(scratch_root) / hashlib.sha256(backup_id.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DomainDisk:
    """A disk of a domain, as its XML says."""

    target: str  # vda, sdb...
    kind: str  # file, block, network, volume...
    device: str  # disk, cdrom, floppy, lun
    source: str | None  # the file or block device path
    fmt: str | None  # raw, qcow2...

    @property
    def readable(self) -> bool:
        return self.device == "disk" and self.kind in ("file", "block") and bool(self.source)

    @property
    def tracks_changes(self) -> bool:
        """Persistent dirty bitmaps need qcow2."""
        return self.fmt == "qcow2"


def domain_disks(xml: str) -> list[DomainDisk]:
    root = ET.fromstring(xml)
    out = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        if target is None or not target.get("dev"):
            continue
        source = disk.find("source")
        path = None
        if source is not None:
            path = source.get("file") or source.get("dev")
        driver = disk.find("driver")
        out.append(
            DomainDisk(
                target=target.get("dev", ""),
                kind=disk.get("type", "file"),
                device=disk.get("device", "disk"),
                source=path,
                fmt=driver.get("type") if driver is not None else None,
            )
        )
    return out


def qemu_owner(xml: str) -> tuple[int, int] | None:
    """The uid and gid QEMU runs as for this running domain (its DAC label), if not root."""
    root = ET.fromstring(xml)
    for label in root.findall("./seclabel[@model='dac']/label"):
        text = (label.text or "").strip()
        if ":" in text:
            user, group = text.split(":", 1)
            with contextlib.suppress(ValueError):
                return int(user.lstrip("+")), int(group.lstrip("+"))
    return None


@dataclass
class BackupOutcome:
    """What the job obtained: consistency, and whether (and why not) it is incremental."""

    consistency: str = CRASH_CONSISTENT
    consistency_note: str | None = None
    incremental: bool = False
    incremental_note: str | None = None
    # Per disk target: read fully (no usable bitmap) with the reason.
    full_disks: dict[str, str] = field(default_factory=dict)


class PullBackup:
    """One pull-mode backup job of a running domain (see the module's docstring)."""

    def __init__(
        self,
        domain: Any,
        scratch_root: str | os.PathLike[str],
        backup_id: str,
        *,
        since: str | None = None,
        disks: list[str] | None = None,
        quiesce: bool = True,
        agent_timeout: int = AGENT_TIMEOUT_SECONDS,
    ) -> None:
        self.domain = domain
        self.checkpoint = checkpoint_name(backup_id)
        self.scratch = scratch_dir(scratch_root, backup_id)
        self.socket = self.scratch / "nbd"
        if len(str(self.socket).encode()) > _SOCKET_PATH_MAX:
            raise HypervisorError(
                f"the VM scratch directory {scratch_root} is too deep for a unix socket path "
                f"(at most {_SOCKET_PATH_MAX - 18} bytes)",
                code="CSBS.6049",
                tenant=SCRATCH_UNUSABLE,
            )
        self.since = since
        self.quiesce = quiesce
        self.agent_timeout = agent_timeout
        all_disks = domain_disks(domain.XMLDesc(0))
        wanted = set(disks) if disks is not None else None
        self.disks = [d for d in all_disks if d.readable and (wanted is None or d.target in wanted)]
        self.others = [d for d in all_disks if d not in self.disks]
        self.outcome = BackupOutcome()
        self._exports: dict[str, NbdExport] = {}
        self._begun = False

    # -- the job --------------------------------------------------------------------------

    def __enter__(self) -> PullBackup:
        cleanup_stale(self.domain, self.scratch.parent, self.checkpoint, self.scratch.name)
        self.scratch.mkdir(mode=0o700, parents=True)
        try:
            owner = qemu_owner(self.domain.XMLDesc(0))
            if owner is not None:
                _check_reachable(self.scratch.parent, *owner)
                os.chown(self.scratch, *owner)  # QEMU binds the socket, writes scratch
            self._begin()
        except BaseException:
            self._end(failed=True)
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._end(failed=exc_type is not None)

    def _begin(self) -> None:
        since = self.since
        if since is not None:
            reason = self._check_since(since)
            if reason is not None:
                self.outcome.incremental_note = reason
                since = None
        frozen = self._freeze()
        try:
            try:
                self._backup_begin(since)
            except libvirt.libvirtError as exc:
                if since is None:
                    raise HypervisorError(
                        f"the backup could not begin: {_message(exc)}", tenant=JOB_REFUSED
                    ) from exc
                # A checkpoint whose bitmap is missing or broken (a host crash, a redefine,
                # a migration): read everything rather than stop.
                self.outcome.incremental_note = (
                    f"checkpoint {since} unusable ({_message(exc)}); read in full"
                )
                log.warning("%s", self.outcome.incremental_note)
                self._delete_own_checkpoint()
                since = None
                try:
                    self._backup_begin(None)
                except libvirt.libvirtError as exc2:
                    raise HypervisorError(
                        f"the backup could not begin: {_message(exc2)}", tenant=JOB_REFUSED
                    ) from exc2
        finally:
            if frozen:
                self._thaw()
        self._begun = True
        self.outcome.incremental = since is not None and any(d.tracks_changes for d in self.disks)
        for disk in self.disks:
            if since is None or not disk.tracks_changes:
                self.outcome.full_disks[disk.target] = (
                    "raw disk: no change tracking"
                    if not disk.tracks_changes
                    else self.outcome.incremental_note or "first backup"
                )

    def _check_since(self, since: str) -> str | None:
        """Why the checkpoint `since` cannot be trusted, or None."""
        try:
            checkpoint = self.domain.checkpointLookupByName(since)
        except libvirt.libvirtError:
            return f"checkpoint {since} is gone"
        try:
            xml = ET.fromstring(checkpoint.getXMLDesc(0))
        except (libvirt.libvirtError, ET.ParseError) as exc:
            return f"checkpoint {since} is unreadable: {exc}"
        tracked = {
            d.get("name") for d in xml.findall("./disks/disk") if d.get("checkpoint") == "bitmap"
        }
        missing = [d.target for d in self.disks if d.tracks_changes and d.target not in tracked]
        if missing:
            return f"checkpoint {since} does not cover disk {', '.join(missing)}"
        return None

    def _backup_xml(self, since: str | None) -> str:
        disks = []
        for d in self.disks:
            scratch = self.scratch / f"{d.target}.scratch"
            mode = "incremental" if since is not None and d.tracks_changes else "full"
            disks.append(
                f"<disk name={quoteattr(d.target)} backup='yes' type='file'"
                f" backupmode='{mode}'"
                + (f" incremental={quoteattr(since or '')}" if mode == "incremental" else "")
                + f" exportname={quoteattr(d.target)} exportbitmap='{DIRTY_EXPORT}'>"
                f"<scratch file={quoteattr(str(scratch))}/></disk>"
            )
        disks += [f"<disk name={quoteattr(d.target)} backup='no'/>" for d in self.others]
        incremental = f"<incremental>{since}</incremental>" if since is not None else ""
        return (
            "<domainbackup mode='pull'>"
            f"{incremental}"
            f"<server transport='unix' socket={quoteattr(str(self.socket))}/>"
            f"<disks>{''.join(disks)}</disks></domainbackup>"
        )

    def _checkpoint_xml(self) -> str:
        disks = [
            f"<disk name={quoteattr(d.target)}"
            f" checkpoint='{'bitmap' if d.tracks_changes else 'no'}'/>"
            for d in self.disks
        ]
        disks += [f"<disk name={quoteattr(d.target)} checkpoint='no'/>" for d in self.others]
        return (
            f"<domaincheckpoint><name>{self.checkpoint}</name>"
            f"<disks>{''.join(disks)}</disks></domaincheckpoint>"
        )

    def _backup_begin(self, since: str | None) -> None:
        checkpoint = self._checkpoint_xml() if any(d.tracks_changes for d in self.disks) else None
        self.domain.backupBegin(self._backup_xml(since), checkpoint, 0)

    # -- the guest agent ------------------------------------------------------------------

    def _freeze(self) -> bool:
        if not self.quiesce:
            self.outcome.consistency_note = "quiescing not asked for"
            return False
        try:
            with contextlib.suppress(libvirt.libvirtError, AttributeError):
                self.domain.agentSetResponseTimeout(self.agent_timeout, 0)
            self.domain.fsFreeze(None, 0)
        except libvirt.libvirtError as exc:
            self.outcome.consistency_note = (
                f"guest file systems not frozen ({_message(exc)}): crash-consistent"
            )
            log.info("%s", self.outcome.consistency_note)
            # A freeze that timed out may have frozen some file systems: thaw anyway.
            self._thaw(quiet=True)
            return False
        self.outcome.consistency = APP_CONSISTENT
        return True

    def _thaw(self, quiet: bool = False) -> None:
        for attempt in range(THAW_ATTEMPTS):
            try:
                self.domain.fsThaw(None, 0)
                return
            except libvirt.libvirtError as exc:
                if quiet:
                    return
                log.warning("thawing the guest failed (attempt %d): %s", attempt + 1, exc)
                time.sleep(0.5)
        if not quiet:
            self.outcome.consistency = CRASH_CONSISTENT
            self.outcome.consistency_note = "the guest could not be thawed after the checkpoint"

    # -- reading --------------------------------------------------------------------------

    def export(self, target: str) -> NbdExport:
        """The point-in-time export of disk `target` (with its dirty bitmap if incremental)."""
        export = self._exports.get(target)
        if export is None:
            dirty = (
                DIRTY_EXPORT
                if self.outcome.incremental and target not in self.outcome.full_disks
                else None
            )
            export = NbdExport(self.socket, target, dirty)
            self._exports[target] = export
        return export

    # -- the end --------------------------------------------------------------------------

    def _end(self, *, failed: bool) -> None:
        for export in self._exports.values():
            export.close()
        self._exports.clear()
        abort_job(self.domain)
        shutil.rmtree(self.scratch, ignore_errors=True)
        if failed:
            self._delete_own_checkpoint()

    def _delete_own_checkpoint(self) -> None:
        delete_checkpoint(self.domain, self.checkpoint)


def _check_reachable(directory: Path, uid: int, gid: int) -> None:
    """QEMU (running as uid:gid) must be able to reach `directory`; say how if not."""
    for path in (directory, *directory.parents):
        st = path.stat()
        if st.st_uid == uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid == gid:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            raise HypervisorError(
                f"QEMU (uid {uid}) cannot reach the VM scratch directory {directory}: "
                f"{path} is not searchable by it (chmod o+x {path})",
                code="CSBS.6049",
                tenant=SCRATCH_UNUSABLE,
            )


def _message(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


def abort_job(domain: Any) -> bool:
    """End the domain's backup job, if one runs; True if there was one."""
    try:
        domain.backupGetXMLDesc(0)
    except libvirt.libvirtError:
        return False
    try:
        domain.abortJob()
    except libvirt.libvirtError as exc:
        log.warning("aborting the backup job failed: %s", exc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            domain.backupGetXMLDesc(0)
        except libvirt.libvirtError:
            return True
        time.sleep(0.05)
    return True


def delete_checkpoint(domain: Any, name: str) -> bool:
    try:
        checkpoint = domain.checkpointLookupByName(name)
    except libvirt.libvirtError:
        return False
    try:
        checkpoint.delete(0)
    except libvirt.libvirtError:
        # Its bitmap is gone or broken: drop libvirt's record of it at least.
        with contextlib.suppress(libvirt.libvirtError):
            checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    return True


def cleanup_stale(domain: Any, scratch_root: Path, checkpoint: str, scratch_name: str) -> None:
    """Undo what an attempt that died left: its job (only one of ours), scratch, checkpoint."""
    try:
        xml = domain.backupGetXMLDesc(0)
    except libvirt.libvirtError:
        xml = None
    if xml is not None:
        server = ET.fromstring(xml).find("server")
        socket = server.get("socket", "") if server is not None else ""
        if socket.startswith(str(scratch_root) + os.sep):
            log.info("aborting a backup job an earlier attempt left on %s", domain.name())
            abort_job(domain)
        else:
            raise HypervisorError(
                f"domain {domain.name()} is already in a backup job of another tool",
                code="CSBS.6043",
                tenant=f"Server {domain.name()} is already in a backup job of another tool.",
            )
    shutil.rmtree(scratch_root / scratch_name, ignore_errors=True)
    delete_checkpoint(domain, checkpoint)


def csbs_checkpoints(domain: Any) -> list[str]:
    try:
        found = domain.listAllCheckpoints(0)
    except libvirt.libvirtError:
        return []
    return [c.getName() for c in found if c.getName().startswith(CHECKPOINT_PREFIX)]


def prune_checkpoints(domain: Any, keep: set[str]) -> list[str]:
    """Delete csbs's checkpoints of the domain not in `keep` (oldest first); return them."""
    removed = []
    for name in csbs_checkpoints(domain):
        if name not in keep and delete_checkpoint(domain, name):
            removed.append(name)
    return removed


class OfflineRead:
    """The disks of a stopped domain read through QEMU's view (`qemu-nbd`, read-only, with
    the image's format): the guest's bytes, never the qcow2 container's. No checkpoint."""

    def __init__(self, domain: Any, disks: list[str] | None = None) -> None:
        self.domain = domain
        all_disks = domain_disks(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        wanted = set(disks) if disks is not None else None
        self.disks = [d for d in all_disks if d.readable and (wanted is None or d.target in wanted)]
        self.outcome = BackupOutcome(
            incremental_note="the domain is stopped: read in full",
            full_disks={d.target: "the domain is stopped" for d in self.disks},
        )
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> OfflineRead:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def export(self, target: str) -> NbdExport:
        disk = next(d for d in self.disks if d.target == target)
        assert disk.source is not None
        server = self._stack.enter_context(QemuNbd(disk.source, disk.fmt or "raw", writable=False))
        return self._stack.enter_context(server.connect())
