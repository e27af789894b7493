"""The Repository facade: one object per process that serves every project's repository.

Handed an Engine (the repository's tables, see `schema`), a BlobStore, a Clock, the
master key and plain settings; it opens or creates a project's repository (a random data
key wrapped by the master key), and hands out writers, readers, deletion, sweep and audit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from typing import BinaryIO

import sqlalchemy as sa

from csbs.blobstore import BlobStore
from csbs.domain.clock import Clock
from csbs.repository import (
    audit,
    chunking,
    delta,
    deployment,
    envelope,
    errors,
    keys,
    layout,
    reclaim,
)
from csbs.repository.index import RELEASE_REFS, ManifestRecord, Usage
from csbs.repository.reader import BackupReader, BlockTarget, RestoreCallback, RestoreProgress
from csbs.repository.reclaim_index import PendingRelease, ReclaimIndex
from csbs.repository.writer import BackupWriter, CancelCheck, PipelineLimits, ProgressCallback

log = logging.getLogger("csbs.repository")


@dataclasses.dataclass(frozen=True)
class RepositorySettings:
    """Tunables, from the service settings."""

    chunk_size: int = chunking.DEFAULT_CHUNK_SIZE  # for new projects
    zstd_level: int = envelope.DEFAULT_ZSTD_LEVEL
    threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 2)
    #: Fetch threads of restores and audits (more than cores: S3 latency).
    io_threads: int = 8
    #: Plaintext bytes whose references one transaction takes.
    batch_bytes: int = 8 * 1024 * 1024
    #: Chunks per reference batch; None derives it from batch_bytes.
    batch_chunks: int | None = None
    #: How long a chunk stays at refcount zero before the sweep removes it; longer than
    #: any upload may take, so a late upload never outlives its row.
    sweep_grace_seconds: float = 900.0
    #: Chunk references a deletion releases per transaction (whole reference batches, at
    #: least one): fewer commits against a shorter step to redo after a crash.
    release_refs: int = RELEASE_REFS


class Repository:
    """Every project's deduplicating chunk repository on one blob store."""

    def __init__(
        self,
        engine: sa.Engine,
        store: BlobStore,
        clock: Clock,
        master_key: bytes | None,
        settings: RepositorySettings,
    ) -> None:
        # No default: a project's repository keeps the chunk size it was created with, so
        # every process that may create one must be given the deployment's settings.
        self.settings = settings
        chunking.validate_chunk_size(self.settings.chunk_size)
        self.index = ReclaimIndex(engine, clock)
        self.store = store
        self.clock = clock
        # None until `establish_deployment` says which key is the deployment's: a process
        # without its key file must not wrap a new project's data key with a key of its own.
        self._master_key = master_key
        self.codec = envelope.Codec(self.settings.zstd_level)
        self._keys: dict[str, tuple[keys.ProjectKeys, int]] = {}
        self._lock = threading.Lock()

    @property
    def grace(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings.sweep_grace_seconds)

    # -- projects ---------------------------------------------------------------------------

    def open_project(self, project_id: str, *, create: bool = True) -> tuple[keys.ProjectKeys, int]:
        """Return the project's keys and chunk size, creating its repository if asked."""
        with self._lock:
            cached = self._keys.get(project_id)
        if cached is not None:
            return cached
        layout.project_prefix(project_id)  # validates the id
        record = self.index.get_project(project_id)
        if record is None:
            if not create:
                raise errors.RepositoryError(f"project {project_id} has no repository")
            wrapped = keys.wrap_data_key(self.master_key, keys.generate_data_key(), project_id)
            chunk_size = self.deployment_chunk_size()
            # New projects hash chunks as trees of their sub-blocks (decision 0027).
            record = self.index.create_project(
                project_id, wrapped, chunk_size, delta.leaf_size(chunk_size)
            )
            # A copy next to the data, for disaster recovery without the database.
            self.store.put(layout.key_name(project_id), record.wrapped_key)
        data_key = keys.unwrap_data_key(self.master_key, record.wrapped_key, project_id)
        opened = (keys.ProjectKeys(data_key, record.chunk_id_leaf), record.chunk_size)
        with self._lock:
            self._keys[project_id] = opened
        return opened

    @property
    def master_key(self) -> bytes:
        if self._master_key is None:
            raise errors.RepositoryError(
                "no master key: the process has not checked the deployment's identity"
            )
        return self._master_key

    def establish_deployment(self, local: deployment.LocalConfig) -> None:
        """Check this process against the deployment its database records (recording it
        at the first start) and take the deployment's master key; raises
        `DeploymentMismatch` before anything is written when a setting differs."""
        key = deployment.establish(self.index, self.store, local)
        self._master_key = key

    def deployment_chunk_size(self, *, replace: bool = False) -> int:
        """The chunk size a new project's repository takes: the deployment's, recorded
        by the first process that asked (normally `csbs serve` or `csbs db upgrade` at
        the first start), whatever this process was configured with; `replace` records
        this process's setting instead (for projects created from now on)."""
        return int(
            self.index.deployment_setting(
                "chunk_size", str(self.settings.chunk_size), replace=replace
            )
        )

    def warn_if_configured_otherwise(self) -> None:
        """Log a warning when this process's chunk_size setting is not the deployment's
        (long-running processes call it at start: the setting has no effect there)."""
        recorded = self.deployment_chunk_size()
        if recorded != self.settings.chunk_size:
            log.warning(
                "chunk_size is set to %d here, but the deployment's is %d: new projects "
                "take the deployment's (csbs repo chunk-size --set changes it)",
                self.settings.chunk_size,
                recorded,
            )

    def projects(self) -> list[str]:
        return [p.project_id for p in self.index.list_projects()]

    def rotate_master_key(self, old: bytes, new: bytes) -> int:
        """Re-wrap every project's data key under `new`; no chunk is rewritten.

        Idempotent: a project already wrapped under `new` is left as it is, so an
        interrupted rotation can be run again. Returns how many projects were re-wrapped.
        """
        changed = 0
        for record in self.index.list_projects():
            try:
                data_key = keys.unwrap_data_key(old, record.wrapped_key, record.project_id)
            except errors.WrongKey:
                keys.unwrap_data_key(new, record.wrapped_key, record.project_id)  # or raise
                continue
            wrapped = keys.wrap_data_key(new, data_key, record.project_id)
            self.store.put(layout.key_name(record.project_id), wrapped)
            self.index.set_wrapped_key(record.project_id, wrapped)
            changed += 1
        # From now on processes must hold the new key: the recorded fingerprint is its.
        self.index.deployment_setting(
            deployment.KEY_FINGERPRINT, deployment.key_fingerprint(new), replace=True
        )
        self._master_key = new
        with self._lock:
            self._keys.clear()
        return changed

    def usage(self, project_id: str) -> Usage:
        return self.index.usage(project_id)

    # -- backup and restore -----------------------------------------------------------------

    def backup_writer(
        self,
        project_id: str,
        backup_id: str,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> BackupWriter:
        """A writer for the disks of backup `backup_id` (created open if new).

        If writing fails, call `delete_backup` to release what it took.
        """
        project_keys, chunk_size = self.open_project(project_id)
        return BackupWriter(
            index=self.index,
            store=self.store,
            project_id=project_id,
            project_keys=project_keys,
            chunk_size=chunk_size,
            codec=self.codec,
            backup_id=backup_id,
            limits=PipelineLimits.for_chunk_size(
                chunk_size,
                self.settings.threads,
                self.settings.batch_bytes,
                self.settings.batch_chunks,
            ),
            progress=progress,
            cancel=cancel,
        )

    def seal_backup(self, project_id: str, backup_id: str) -> None:
        """Mark the backup complete: no more disks; the audit then checks it exactly."""
        self.index.seal_backup(project_id, backup_id)

    def disks(self, project_id: str, backup_id: str) -> list[ManifestRecord]:
        return self.index.manifests(project_id, backup_id)

    def reader(self, project_id: str) -> BackupReader:
        project_keys, _ = self.open_project(project_id, create=False)
        return BackupReader(
            index=self.index,
            store=self.store,
            project_id=project_id,
            project_keys=project_keys,
            codec=self.codec,
            threads=self.settings.io_threads,
        )

    def restore(
        self,
        project_id: str,
        backup_id: str,
        disk_id: str,
        target: str | os.PathLike[str] | int | BinaryIO | BlockTarget,
        *,
        progress: RestoreCallback | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> RestoreProgress:
        """Write one disk of a backup to a file, block device, fd or stream; digest checked."""
        return self.reader(project_id).restore(
            backup_id, disk_id, target, progress=progress, cancel=cancel
        )

    def verify(self, project_id: str, backup_id: str) -> list[RestoreProgress]:
        """Read back and verify every chunk of every disk of the backup, and each digest."""
        reader = self.reader(project_id)
        disks = self.index.manifests(project_id, backup_id)
        if not disks:
            raise errors.RepositoryError(f"backup {backup_id} has no complete disk")
        return [reader.restore(backup_id, d.disk_id, None) for d in disks]

    # -- reclamation and audit --------------------------------------------------------------

    def delete_backup(
        self,
        project_id: str,
        backup_id: str,
        progress: Callable[[reclaim.DeleteProgress], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> reclaim.DeleteResult:
        """Release the backup's references (resumable, idempotent); usage is exact at the end."""
        return reclaim.delete_backup(
            self.index,
            self.store,
            project_id,
            backup_id,
            progress,
            cancel,
            release_refs=self.settings.release_refs,
        )

    def pending_sweep(self, project_id: str) -> tuple[int, int]:
        """(chunks, stored bytes) of the project at refcount zero, waiting for the sweep."""
        return self.index.pending_sweep(project_id)

    def pending_release(self, project_id: str) -> PendingRelease:
        """The project's chunks at refcount zero, waiting for the grace and a sweep."""
        return self.index.pending_release(project_id)

    def sweep_due(self, project_id: str) -> bool:
        """Whether a sweep of the project now would release or clear anything."""
        return self.index.sweep_due(project_id, self.clock.now() - self.grace)

    def sweep(self, project_id: str) -> reclaim.SweepResult:
        """Remove the project's chunks that have been unreferenced for longer than the grace."""
        return reclaim.sweep(self.index, self.store, self.clock, self.grace, project_id)

    def check(self, project_id: str | None = None, read_data: bool = False) -> audit.CheckReport:
        """Mark-and-sweep audit of one project or all, and the modes of a local store's
        directories and files (of that project, or all); see `audit`."""
        report = audit.CheckReport()
        projects = [project_id] if project_id is not None else self.projects()
        for pid in projects:
            project_keys, _ = self.open_project(pid, create=False)
            audit.check_project(
                self.index,
                self.store,
                pid,
                project_keys,
                self.codec,
                report,
                read_data=read_data,
                threads=self.settings.io_threads,
            )
        under = "" if project_id is None else layout.project_prefix(project_id).rstrip("/")
        audit.check_modes(self.store, under, report)
        return report

    def repair(self, report: audit.CheckReport) -> int:
        """Remove only the leaked blobs of `report`; returns how many."""
        return audit.repair(self.index, self.store, report)

    def tighten(self, report: audit.CheckReport) -> int:
        """Make the directories and files of `report.loose_modes` their owner's alone;
        returns how many changed."""
        return audit.tighten(self.store, report)
