"""The backup pipeline: read a disk, hash, dedup against the project, seal and upload new chunks.

Threads: the calling thread reads (holes skipped with SEEK_DATA/SEEK_HOLE) and feeds the
image digest (the chunk table's, as the ids come back in image order); a pool hashes
chunks and seals + uploads new ones (BLAKE3, zstd and AES-GCM release the GIL; each
thread has its own zstd context through `envelope.Codec`).
Every stage is bounded: at most `window` chunks wait for their hash, `batch` chunks for
their dedup decision, and `uploads` envelopes for the store, so memory does not depend on
the disk's size. Decisions are taken one batch at a time in one transaction that takes
the references, records them for the backup, and says which chunks must be uploaded.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from csbs.blobstore import BlobNotFound, BlobStore
from csbs.blobstore.aligned import AlignedBuffer
from csbs.fileio.direct import AlignedBuffers
from csbs.repository import chunking, envelope, errors, keys, layout, manifest
from csbs.repository.index import ChunkIndex, Confirmation, ManifestRecord

_GENERATION_BLOCK = 1024


@dataclasses.dataclass
class BackupProgress:
    """How far a disk backup is, in bytes of the image."""

    total_bytes: int
    position: int = 0  # bytes of the image passed (holes included)
    read_bytes: int = 0  # bytes actually read (holes skipped)
    new_bytes: int = 0  # plaintext bytes of chunks uploaded
    reused_bytes: int = 0  # plaintext bytes of chunks the project already had
    stored_bytes: int = 0  # envelope bytes uploaded


ProgressCallback = Callable[[BackupProgress], None]
CancelCheck = Callable[[], bool]

Run = chunking.Data | chunking.Holes | chunking.Known


class ChunkSource(Protocol):
    """A disk read by something other than a file descriptor (a VM disk over NBD).

    `runs` yields the chunks in image order like `chunking.iter_runs`, and may also yield
    `chunking.Known` for a chunk it knows unchanged since an earlier backup (not read).
    `read_chunk` reads one chunk's bytes: the writer asks for a Known chunk whose stored
    copy is gone from the repository.
    """

    @property
    def size(self) -> int: ...

    def runs(self, chunk_size: int) -> Iterator[Run]: ...

    def read_chunk(self, index: int, chunk_size: int) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class DiskBackup:
    """The result of backing up one disk."""

    disk_id: str
    manifest_id: str
    image_digest: bytes
    progress: BackupProgress


@dataclasses.dataclass(frozen=True)
class PipelineLimits:
    """Bounds of the pipeline (in chunks) and its threads."""

    threads: int
    sealers: int  # chunks compressed and encrypted at once (each needs ~4 chunk buffers)
    batch_chunks: int
    window: int
    uploads: int

    @classmethod
    def for_chunk_size(
        cls, chunk_size: int, threads: int, batch_bytes: int, batch_chunks: int | None = None
    ) -> PipelineLimits:
        batch = batch_chunks or max(1, min(256, batch_bytes // chunk_size))
        # Uploads wait on the disk or the network more than on a core: more than cores.
        # With direct I/O four at once were as fast as five (more were no faster through
        # the page cache), and each holds a chunk and its envelope buffer, so not more
        # (the figures: docs/decisions/0012-direct-io-for-what-the-engine-writes.md).
        uploads = max(4, threads + 1)
        return cls(
            threads=uploads + 1,
            sealers=threads,
            batch_chunks=batch,
            # Chunks read ahead of the oldest unhashed one: one per hashing thread (a
            # larger window measured no faster, and costs a chunk buffer each).
            window=threads,
            uploads=uploads,
        )


class _Generations:
    """Chunk generations reserved from the database in blocks."""

    def __init__(self, index: ChunkIndex, project_id: str) -> None:
        self._index = index
        self._project_id = project_id
        self._next = self._end = 0

    def take(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self._next == self._end:
                self._next = self._index.reserve_generations(self._project_id, _GENERATION_BLOCK)
                self._end = self._next + _GENERATION_BLOCK
            step = min(count - len(out), self._end - self._next)
            out.extend(range(self._next, self._next + step))
            self._next += step
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Parts:
    """What the pipeline of one backup works with: given by the writer to each disk's run."""

    index: ChunkIndex
    store: BlobStore
    project_id: str
    backup_id: str
    project_keys: keys.ProjectKeys
    codec: envelope.Codec
    chunk_size: int
    limits: PipelineLimits
    generations: _Generations
    progress: ProgressCallback | None
    cancel: CancelCheck


class BackupWriter:
    """Writes the disks of one backup into a project's repository.

    Every disk written takes references that the backup holds until `delete_backup`; if a
    disk fails (error, cancellation, crash), the references it took are recorded too, so
    deleting the backup releases exactly them.
    """

    def __init__(
        self,
        *,
        index: ChunkIndex,
        store: BlobStore,
        project_id: str,
        project_keys: keys.ProjectKeys,
        chunk_size: int,
        codec: envelope.Codec,
        backup_id: str,
        limits: PipelineLimits,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> None:
        self.backup_id = backup_id
        self._parts = _Parts(
            index=index,
            store=store,
            project_id=project_id,
            backup_id=backup_id,
            project_keys=project_keys,
            codec=codec,
            chunk_size=chunk_size,
            limits=limits,
            generations=_Generations(index, project_id),
            progress=progress,
            cancel=cancel or (lambda: False),
        )
        layout.backup_manifests_prefix(project_id, backup_id)  # validates the id
        index.open_backup(project_id, backup_id)

    def write_disk(
        self, disk_id: str, source: int | str | os.PathLike[str] | ChunkSource
    ) -> DiskBackup:
        """Back up the file or block device `source` (a path, or an open fd), or a
        `ChunkSource`, as `disk_id`."""
        parts = self._parts
        name = layout.disk_manifest_name(parts.project_id, self.backup_id, disk_id)
        if any(
            m.disk_id == disk_id for m in parts.index.manifests(parts.project_id, self.backup_id)
        ):
            raise errors.RepositoryError(f"backup {self.backup_id} already has disk {disk_id}")
        if isinstance(source, int):
            return self._write_fd(disk_id, name, source)
        if not isinstance(source, (str, os.PathLike)):
            return self._write_source(disk_id, name, source)
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return self._write_fd(disk_id, name, fd)
        finally:
            os.close(fd)

    def reuse_disk(self, disk_id: str, previous_backup_id: str) -> DiskBackup | None:
        """Record `disk_id` as the same image as in `previous_backup_id`, reading nothing.

        The new backup takes its own references to every chunk of the previous manifest
        (recorded in its batches like any other, so deleting either backup never breaks
        the other) and stores its own copy of the manifest: it restores directly. Returns
        None, having taken nothing, when the previous disk cannot be reused (it is gone,
        or a chunk of it is no longer stored): the caller then reads the disk.
        """
        parts = self._parts
        name = layout.disk_manifest_name(parts.project_id, self.backup_id, disk_id)
        records = [
            m
            for m in parts.index.manifests(parts.project_id, previous_backup_id)
            if m.disk_id == disk_id
        ]
        if not records:
            return None
        record = records[0]
        try:
            sealed = parts.store.get(
                layout.disk_manifest_name(parts.project_id, previous_backup_id, disk_id)
            )
            previous = manifest.open_manifest(
                parts.project_keys, sealed, parts.codec, record.manifest_id
            )
        except (BlobNotFound, errors.RepositoryError):
            return None
        if previous.chunk_size != parts.chunk_size:
            return None
        counts: collections.Counter[str] = collections.Counter(previous.chunk_ids())
        if len(parts.index.generations(parts.project_id, counts)) != len(counts):
            return None  # a chunk went away meanwhile (its backup was deleted): read anew
        if any(
            m.disk_id == disk_id for m in parts.index.manifests(parts.project_id, self.backup_id)
        ):
            raise errors.RepositoryError(f"backup {self.backup_id} already has disk {disk_id}")
        progress = BackupProgress(total_bytes=previous.logical_size)
        ids = sorted(counts)
        step = parts.limits.batch_chunks
        for start in range(0, len(ids), step):
            if parts.cancel():
                raise errors.Cancelled()
            part = {c: counts[c] for c in ids[start : start + step]}
            refs = parts.index.take_refs(
                parts.project_id,
                parts.backup_id,
                part,
                dict.fromkeys(part, parts.chunk_size),
                parts.generations.take(len(part)),
            )
            if not all(ref.stored for ref in refs.values()):
                # Swept between the check and the references (a deletion's grace ran
                # out): what was taken stays recorded for this backup, which fails.
                raise errors.RepositoryError(
                    f"the chunks of disk {disk_id} in backup {previous_backup_id} were "
                    "removed while this backup referenced them; run it again"
                )
        # The image's bytes that are not holes: what this backup holds without reading.
        chunk_size = parts.chunk_size
        for i, entry in enumerate(previous.entries()):
            if entry is not None:
                progress.reused_bytes += min(chunk_size, previous.logical_size - i * chunk_size)
        progress.position = previous.logical_size
        parts.store.put(name, sealed)
        try:
            parts.index.add_manifest(
                parts.project_id,
                ManifestRecord(
                    self.backup_id,
                    disk_id,
                    record.manifest_id,
                    record.logical_size,
                    record.chunk_count,
                ),
                (),
            )
        except BaseException:
            if not any(
                m.disk_id == disk_id
                for m in parts.index.manifests(parts.project_id, self.backup_id)
            ):
                parts.store.delete(name)
            raise
        if parts.progress is not None:
            parts.progress(dataclasses.replace(progress))
        return DiskBackup(disk_id, record.manifest_id, previous.image_digest, progress)

    def _write_fd(self, disk_id: str, name: str, fd: int) -> DiskBackup:
        size = chunking.device_size(fd)
        return self._write_runs(
            disk_id, name, size, chunking.iter_runs(fd, self._parts.chunk_size), None
        )

    def _write_source(self, disk_id: str, name: str, source: ChunkSource) -> DiskBackup:
        return self._write_runs(
            disk_id, name, source.size, source.runs(self._parts.chunk_size), source
        )

    def _write_runs(
        self,
        disk_id: str,
        name: str,
        size: int,
        runs: Iterator[Run],
        source: ChunkSource | None,
    ) -> DiskBackup:
        parts = self._parts
        run = _DiskRun(parts, size, source)
        with concurrent.futures.ThreadPoolExecutor(
            parts.limits.threads, thread_name_prefix="csbs-backup"
        ) as pool:
            run.pool = pool
            try:
                run.run(runs)
            except BaseException:
                run.abandon()
                raise
            finally:
                run.buffers.close()
        built = run.builder.finish(run.digest.digest())
        manifest_id, sealed = manifest.seal_manifest(parts.project_keys, built, parts.codec)
        parts.store.put(name, sealed)
        try:
            parts.index.add_manifest(
                parts.project_id,
                ManifestRecord(
                    self.backup_id, disk_id, manifest_id, size, sum(1 for _ in built.chunk_ids())
                ),
                run.confirmations,
            )
        except BaseException:
            # Remove the orphan manifest, unless the failure is that this disk is already
            # complete (its blob is then the one just overwritten, and it is valid).
            if not any(
                m.disk_id == disk_id
                for m in parts.index.manifests(parts.project_id, self.backup_id)
            ):
                parts.store.delete(name)
            raise
        return DiskBackup(disk_id, manifest_id, built.image_digest, run.progress)


class _DiskRun:
    """The state of one disk going through the pipeline."""

    def __init__(self, parts: _Parts, size: int, source: ChunkSource | None = None) -> None:
        self.parts = parts
        self.size = size
        self.source = source
        self.builder = manifest.ManifestBuilder(size, parts.chunk_size)
        self.digest = manifest.TableDigest(size, parts.chunk_size)
        self.progress = BackupProgress(total_bytes=size)
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        # (index, data, hash future), (hole count, None, None), or for a known chunk
        # (index, its length, its id), in image order.
        self.hashing: collections.deque[
            tuple[int, bytes | int | None, concurrent.futures.Future[keys.ChunkId] | str | None]
        ] = collections.deque()
        # (index, data or a known chunk's length, id) or (hole count, None, None).
        self.batch: list[tuple[int, bytes | int | None, keys.ChunkId | None]] = []
        self.batch_data = 0
        self.sealing = threading.BoundedSemaphore(parts.limits.sealers)
        # Envelopes are sealed into these, one per upload running (at most `uploads`).
        self.buffers = AlignedBuffers(parts.chunk_size + envelope.OVERHEAD, AlignedBuffer)
        self.uploads: dict[concurrent.futures.Future[Confirmation], str] = {}
        # Uploads done but not yet confirmed in the database, by chunk id.
        self.confirmations: list[Confirmation] = []
        self.unconfirmed: dict[str, int] = {}

    def run(self, runs: Iterator[Run]) -> None:
        parts = self.parts
        limits = parts.limits
        assert self.pool is not None
        for item in runs:
            if parts.cancel():
                raise errors.Cancelled()
            if isinstance(item, chunking.Data):
                self.progress.read_bytes += len(item.data)
                future = self.pool.submit(parts.project_keys.chunk_id, item.data)
                self.hashing.append((item.index, item.data, future))
            elif isinstance(item, chunking.Known):
                self.hashing.append((item.index, item.length, item.chunk_id))
            else:
                self.hashing.append((item.count, None, None))
            self._drain(wait_first=len(self.hashing) > limits.window)
        self._drain(wait_first=True, everything=True)
        self._flush()
        self._wait_uploads(0)

    def _drain(self, *, wait_first: bool, everything: bool = False) -> None:
        """Move hashed chunks, in order, from the hashing window into the batch.

        `wait_first` waits for the oldest hash (the window is full); `everything` waits
        for all of them (end of the disk).
        """
        while self.hashing:
            first, data, future = self.hashing[0]
            if (
                isinstance(future, concurrent.futures.Future)
                and not future.done()
                and not (wait_first or everything)
            ):
                return
            wait_first = False
            self.hashing.popleft()
            # The digest takes the entries in the order the image was read, apart from
            # the batches and the manifest builder, which it checks on restore.
            if future is None:
                self.digest.update_holes(first)
                self.batch.append((first, None, None))
                continue
            chunk_id = keys.ChunkId(future) if isinstance(future, str) else future.result()
            self.digest.update_chunk(chunk_id)
            self.batch.append((first, data, chunk_id))
            self.batch_data += 1
            if self.batch_data >= self.parts.limits.batch_chunks:
                self._flush()

    def _flush(self) -> None:
        """Decide the batch: take references in one transaction, upload what is new."""
        parts = self.parts
        counts: dict[str, int] = collections.Counter(c for _, _, c in self.batch if c is not None)
        sizes: dict[str, int] = {
            c: d if isinstance(d, int) else len(d)
            for _, d, c in self.batch
            if c is not None and d is not None
        }
        confirmations, self.confirmations = self.confirmations, []
        for item in confirmations:
            self.unconfirmed.pop(item.chunk_id, None)
        refs = (
            parts.index.take_refs(
                parts.project_id,
                parts.backup_id,
                counts,
                sizes,
                parts.generations.take(len(counts)),
                confirmations,
            )
            if counts or confirmations
            else {}
        )
        scheduled: set[str] = set()
        chunk_size = parts.chunk_size
        for first, data, chunk_id in self.batch:
            if chunk_id is None or data is None:
                self.builder.add_holes(first)
                self.progress.position = min(self.size, self.progress.position + first * chunk_size)
                continue
            self.builder.add_chunk(chunk_id)
            self.progress.position = min(self.size, (first + 1) * chunk_size)
            ref = refs[chunk_id]
            if (
                ref.stored
                or chunk_id in scheduled
                or self.unconfirmed.get(chunk_id) == (ref.generation)
            ):
                self.progress.reused_bytes += data if isinstance(data, int) else len(data)
                continue
            if isinstance(data, int):
                data = self._reread(first, chunk_id)
            scheduled.add(chunk_id)
            self.progress.new_bytes += len(data)
            self._wait_uploads(parts.limits.uploads - 1)
            assert self.pool is not None
            # The plaintext travels in a list the upload empties: the pool's work item
            # would otherwise keep it alive during the (slow, fsync- or network-bound) put.
            future = self.pool.submit(self._upload, chunk_id, ref.generation, [data])
            self.uploads[future] = chunk_id
            self.unconfirmed[chunk_id] = ref.generation
        self.batch = []
        self.batch_data = 0
        if parts.progress is not None:
            parts.progress(dataclasses.replace(self.progress))

    def _reread(self, index: int, chunk_id: str) -> bytes:
        """Read a known chunk whose stored copy is gone (released and swept meanwhile)."""
        assert self.source is not None
        data = self.source.read_chunk(index, self.parts.chunk_size)
        self.progress.read_bytes += len(data)
        if self.parts.project_keys.chunk_id(data) != chunk_id:
            raise errors.IntegrityError(
                chunk_id, f"chunk {index} of the disk is not this unchanged chunk any more"
            )
        return data

    def _upload(self, chunk_id: str, generation: int, holder: list[bytes]) -> Confirmation:
        """Seal a new chunk into an aligned buffer and store it from there (no copy)."""
        parts = self.parts
        with self.buffers.lend() as buffer:
            with self.sealing:
                length = parts.codec.seal_into(
                    parts.project_keys, chunk_id, holder.pop(), buffer.memory
                )
            name = layout.chunk_name(parts.project_id, chunk_id, generation)
            parts.store.put(name, buffer.blob(length))
        return Confirmation(chunk_id, generation, length)

    def _wait_uploads(self, keep: int) -> None:
        while len(self.uploads) > keep:
            done, _ = concurrent.futures.wait(
                self.uploads, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                del self.uploads[future]
                confirmation = future.result()
                self.progress.stored_bytes += confirmation.stored_size
                self.confirmations.append(confirmation)

    def abandon(self) -> None:
        """After a failure: let running uploads end, and record those that completed."""
        for future in list(self.uploads):
            future.cancel()
        concurrent.futures.wait(self.uploads)
        done = [f.result() for f in self.uploads if not f.cancelled() and f.exception() is None]
        # The original failure matters more; unconfirmed rows just stay "not stored".
        with contextlib.suppress(Exception):
            self.parts.index.confirm(self.parts.project_id, [*self.confirmations, *done])
