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
from csbs.repository import chunking, delta, envelope, errors, keys, layout, manifest, memtune
from csbs.repository.index import ChunkIndex, Confirmation, ManifestRecord

_GENERATION_BLOCK = 1024
#: Chunks per reference batch when a disk reuses an earlier image (nothing is uploaded,
#: so no upload waits on a batch; a deletion still releases them whole).
_REUSE_BATCH = 1024


@dataclasses.dataclass
class BackupProgress:
    """How far a disk backup is, in bytes of the image."""

    total_bytes: int
    position: int = 0  # bytes of the image passed (holes included)
    read_bytes: int = 0  # bytes actually read (holes skipped)
    new_bytes: int = 0  # plaintext bytes uploaded (of a delta: its changed sub-blocks)
    reused_bytes: int = 0  # plaintext bytes of chunks the project already had
    stored_bytes: int = 0  # envelope bytes uploaded
    delta_chunks: int = 0  # chunks stored as the sub-blocks that changed over a base


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
        # Three on two cores: the fourth's 8 MiB took a worker process over its 150 MiB
        # (docs/decisions/0015-malloc-tuned-at-process-start.md).
        uploads = max(3, threads + 1)
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
        self._previous: tuple[ManifestRecord, bytes, manifest.Manifest] | None = None

    def write_disk(
        self,
        disk_id: str,
        source: int | str | os.PathLike[str] | ChunkSource,
        *,
        previous: str | None = None,
    ) -> DiskBackup:
        """Back up the file or block device `source` (a path, or an open fd), or a
        `ChunkSource`, as `disk_id`.

        `previous`: a backup holding an earlier image of the same disk. A chunk that
        changed in part since then is stored as the sub-blocks that changed over that
        image's chunk (`delta.py`), found by the sub-block digests its manifest kept, or
        given by the source (`chunking.Data.changed`). Without it (or when that backup
        has no such disk any more) every changed chunk is stored whole."""
        parts = self._parts
        self._previous = None if previous is None else self._previous_manifest(disk_id, previous)
        name = layout.disk_manifest_name(parts.project_id, self.backup_id, disk_id)
        if any(
            m.disk_id == disk_id for m in parts.index.manifests(parts.project_id, self.backup_id)
        ):
            raise errors.RepositoryError(f"backup {self.backup_id} already has disk {disk_id}")
        try:
            if isinstance(source, int):
                return self._write_fd(disk_id, name, source)
            if not isinstance(source, (str, os.PathLike)):
                return self._write_source(disk_id, name, source)
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return self._write_fd(disk_id, name, fd)
            finally:
                os.close(fd)
        finally:
            # A worker runs one task after another: what malloc keeps free after this
            # disk, and idle compression contexts, would count towards the next task's
            # peak (`memtune`).
            self._parts.codec.release()
            memtune.release_free_memory()

    def _previous_manifest(
        self, disk_id: str, backup_id: str
    ) -> tuple[ManifestRecord, bytes, manifest.Manifest] | None:
        """The record, sealed blob and manifest of `disk_id` in `backup_id`; None if gone
        or of another chunk size."""
        parts = self._parts
        records = [
            m for m in parts.index.manifests(parts.project_id, backup_id) if m.disk_id == disk_id
        ]
        if not records:
            return None
        try:
            sealed = parts.store.get(
                layout.disk_manifest_name(parts.project_id, backup_id, disk_id)
            )
            found = manifest.open_manifest(
                parts.project_keys, sealed, parts.codec, records[0].manifest_id
            )
        except (BlobNotFound, errors.RepositoryError):
            return None
        if found.chunk_size != parts.chunk_size:
            return None
        return records[0], sealed, found

    def reuse_disk(self, disk_id: str, previous_backup_id: str) -> DiskBackup | None:
        """Record `disk_id` as the same image as in `previous_backup_id`, reading nothing.

        The new backup takes its own references to every chunk of the previous manifest
        (recorded in its batches like any other, so deleting either backup never breaks
        the other) and stores its own copy of the manifest: it restores directly. Returns
        None, having taken nothing, when the previous disk cannot be reused (it is gone,
        or a chunk of it is no longer stored, checked in the transaction that takes the
        references): the caller then reads the disk.
        """
        parts = self._parts
        name = layout.disk_manifest_name(parts.project_id, self.backup_id, disk_id)
        found = self._previous_manifest(disk_id, previous_backup_id)
        if found is None:
            return None
        record, sealed, previous = found
        counts: collections.Counter[str] = collections.Counter(previous.chunk_ids())
        if any(
            m.disk_id == disk_id for m in parts.index.manifests(parts.project_id, self.backup_id)
        ):
            raise errors.RepositoryError(f"backup {self.backup_id} already has disk {disk_id}")
        if parts.cancel():
            raise errors.Cancelled()
        progress = BackupProgress(total_bytes=previous.logical_size)
        # One transaction, and nothing taken unless every chunk is still stored (the
        # earlier backup may have been deleted and swept meanwhile: then read the disk).
        if not parts.index.add_refs(parts.project_id, parts.backup_id, counts, _REUSE_BATCH):
            return None
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
        previous, self._previous = self._previous, None
        run = _DiskRun(parts, size, None if previous is None else previous[2], source)
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


@dataclasses.dataclass(slots=True)
class _Entry:
    """A manifest entry in a batch: a chunk (`data`, `chunk_id`, its sub-block digests,
    and the base and pieces it would be stored as) or, with `data` None, `index` holes."""

    index: int
    #: the chunk's bytes; for a chunk known unchanged (not read), its length
    data: bytes | int | None
    chunk_id: keys.ChunkId | None
    digests: bytes | None
    delta: tuple[str, list[tuple[int, int]]] | None


class _PreviousChunks:
    """The previous image's entries, walked in step with the new image's chunks."""

    def __init__(self, previous: manifest.Manifest | None, sub_block: int) -> None:
        self._entries = iter(()) if previous is None else previous.entries_with_digests()
        # Digests of another sub-block size cannot be compared: only a source's regions.
        self._comparable = previous is not None and previous.sub_block == sub_block
        self._next = 0

    def at(self, index: int) -> tuple[str | None, memoryview | None]:
        """The previous entry at chunk `index` (None past its end, or a hole) and its
        sub-block digests (None when not comparable). Indexes must grow."""
        found: tuple[manifest.Entry, memoryview | None] = (None, None)
        while self._next <= index:
            found = next(self._entries, (None, None))
            self._next += 1
        entry, digests = found
        if self._next != index + 1:
            return None, None
        return entry, digests if self._comparable else None


class _DiskRun:
    """The state of one disk going through the pipeline."""

    def __init__(
        self,
        parts: _Parts,
        size: int,
        previous: manifest.Manifest | None,
        source: ChunkSource | None = None,
    ) -> None:
        self.parts = parts
        self.size = size
        self.source = source
        self.sub_block = delta.sub_block_size(parts.chunk_size, size)
        self.previous = _PreviousChunks(previous, self.sub_block)
        self.builder = manifest.ManifestBuilder(size, parts.chunk_size, self.sub_block)
        self.digest = manifest.TableDigest(size, parts.chunk_size)
        self.progress = BackupProgress(total_bytes=size)
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        # (chunk, hash future), (hole count, None) or (known chunk, None), in image order.
        self.hashing: collections.deque[
            tuple[
                chunking.Data | chunking.Known | int,
                concurrent.futures.Future[tuple[keys.ChunkId, bytes]] | None,
            ]
        ] = collections.deque()
        self.batch: list[_Entry] = []
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
                future = self.pool.submit(self._hash, item.data)
                self.hashing.append((item, future))
            elif isinstance(item, chunking.Known):
                self.hashing.append((item, None))
            else:
                self.hashing.append((item.count, None))
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
            item, future = self.hashing[0]
            if future is not None and not future.done() and not (wait_first or everything):
                return
            wait_first = False
            self.hashing.popleft()
            # The digest takes the entries in the order the image was read, apart from
            # the batches and the manifest builder, which it checks on restore.
            if isinstance(item, chunking.Known):
                # Unchanged since the previous backup: its entry, and its sub-block
                # digests where the previous image of the disk has them (zeros, "not
                # known", otherwise).
                known = keys.ChunkId(item.chunk_id)
                self.digest.update_chunk(known)
                base, old = self.previous.at(item.index)
                digests = bytes(old) if base == known and old is not None else None
                self.batch.append(_Entry(item.index, item.length, known, digests, None))
                self.batch_data += 1
                if self.batch_data >= self.parts.limits.batch_chunks:
                    self._flush()
                continue
            if future is None or not isinstance(item, chunking.Data):
                assert isinstance(item, int)
                self.digest.update_holes(item)
                self.batch.append(_Entry(item, None, None, b"", None))
                continue
            chunk_id, digests = future.result()
            self.digest.update_chunk(chunk_id)
            self.batch.append(
                _Entry(
                    item.index,
                    item.data,
                    chunk_id,
                    digests,
                    self._delta_of(item, chunk_id, digests),
                )
            )
            self.batch_data += 1
            if self.batch_data >= self.parts.limits.batch_chunks:
                self._flush()

    def _hash(self, data: bytes) -> tuple[keys.ChunkId, bytes]:
        return delta.digest_chunk(self.parts.project_keys, data, self.sub_block)

    def _delta_of(
        self, item: chunking.Data, chunk_id: str, digests: bytes
    ) -> tuple[str, list[tuple[int, int]]] | None:
        """The base and changed pieces a chunk would be stored as, if it changed in part
        since the previous image of the disk; None to store it whole."""
        base, old = self.previous.at(item.index)
        if base is None or base == chunk_id:
            return None
        pieces = delta.changed_pieces(len(item.data), self.sub_block, digests, old, item.changed)
        if not pieces:
            return None
        if sum(size for _, size in pieces) > delta.MAX_DELTA_SHARE * len(item.data):
            return None  # mostly new: stored whole, and a base for the next ones
        return base, pieces

    def _flush(self) -> None:
        """Decide the batch: take references in one transaction, upload what is new."""
        parts = self.parts
        counts: dict[str, int] = collections.Counter(e.chunk_id for e in self.batch if e.chunk_id)
        sizes: dict[str, int] = {
            e.chunk_id: e.data if isinstance(e.data, int) else len(e.data)
            for e in self.batch
            if e.chunk_id and e.data is not None
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
        uploads: list[_Entry] = []
        for entry in self.batch:
            if entry.chunk_id is None or entry.data is None:
                self.builder.add_holes(entry.index)
                self.progress.position = min(
                    self.size, self.progress.position + entry.index * chunk_size
                )
                continue
            chunk_id = entry.chunk_id
            self.builder.add_chunk(chunk_id, entry.digests)
            self.progress.position = min(self.size, (entry.index + 1) * chunk_size)
            ref = refs[chunk_id]
            if (
                ref.stored
                or chunk_id in scheduled
                or self.unconfirmed.get(chunk_id) == (ref.generation)
            ):
                self.progress.reused_bytes += (
                    entry.data if isinstance(entry.data, int) else len(entry.data)
                )
                continue
            if isinstance(entry.data, int):
                # A known chunk whose stored copy is gone: read it again, stored whole.
                entry.data = self._reread(entry.index, chunk_id)
                entry.delta = None
            scheduled.add(chunk_id)
            uploads.append(entry)
        # Chunks that changed in part stand on their previous version where its row lets
        # them (stored, chain not too deep); the others are stored whole.
        bases = parts.index.attach_bases(
            parts.project_id,
            {e.chunk_id: e.delta[0] for e in uploads if e.chunk_id and e.delta},
            delta.MAX_DEPTH,
        )
        for entry in uploads:
            assert entry.chunk_id is not None and isinstance(entry.data, bytes)
            ref = refs[entry.chunk_id]
            base = bases.get(entry.chunk_id)
            data: bytes = entry.data
            if base is not None and entry.delta is not None:
                pieces = entry.delta[1]
                changed = sum(size for _, size in pieces)
                data = delta.encode(base[0], base[1], entry.data, pieces)
                self.progress.new_bytes += changed
                self.progress.reused_bytes += len(entry.data) - changed
                self.progress.delta_chunks += 1
            else:
                self.progress.new_bytes += len(entry.data)
            self._wait_uploads(parts.limits.uploads - 1)
            assert self.pool is not None
            # The plaintext travels in a list the upload empties: the pool's work item
            # would otherwise keep it alive during the (slow, fsync- or network-bound) put.
            future = self.pool.submit(
                self._upload, entry.chunk_id, ref.generation, [data], base is not None
            )
            self.uploads[future] = entry.chunk_id
            self.unconfirmed[entry.chunk_id] = ref.generation
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

    def _upload(
        self, chunk_id: str, generation: int, holder: list[bytes], is_delta: bool = False
    ) -> Confirmation:
        """Seal a new chunk (or its delta) into an aligned buffer and store it from there."""
        parts = self.parts
        with self.buffers.lend() as buffer:
            with self.sealing:
                length = parts.codec.seal_into(
                    parts.project_keys, chunk_id, holder.pop(), buffer.memory, delta=is_delta
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
