"""The restore pipeline: fetch a disk's chunks in parallel, write them in order, check the digest.

A pool fetches and opens envelopes (every chunk's id is verified by `envelope.open_`);
the calling thread takes them in image order, feeds the image digest (v2 manifests: the
chunk table's; v1: the whole image's) and writes them, or hands them to the direct writes
of a file or device (`_DirectWrites`). At most `window` chunks are in flight. Holes
are left unwritten in a regular file (which is truncated first, so they read as zeros and
stay sparse) and written as zeros to block devices and streams. The digest is compared at
the end; a mismatch raises `ImageDigestMismatch` (the caller must not trust the target).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol, runtime_checkable

from csbs.blobstore import BlobNotFound, BlobStore
from csbs.fileio import loops
from csbs.fileio.direct import (
    ALIGNMENT,
    AlignedBuffers,
    AlignedMemory,
    end_direct,
    start_direct,
)
from csbs.repository import delta, envelope, errors, keys, layout, manifest, memtune
from csbs.repository.index import DELETING, ChunkIndex

_ZEROS = bytes(1024 * 1024)
# Plaintext of chunks fetched ahead of the one being written: two 4 MiB chunks, one per
# core decrypting and decompressing. Four took a worker's restore over 150 MiB, and the
# restore was no slower with two (docs/decisions/0015-malloc-tuned-at-process-start.md).
_IN_FLIGHT_BYTES = 8 * 1024 * 1024  # bytes
_LOOKUP_BATCH = 256  # chunk ids whose generations are looked up at once
_WRITEBACK_BYTES = 32 * 1024 * 1024  # restored bytes handed to writeback at once
_WRITEBACK_LAG = 2  # ranges later, a range handed to writeback is dropped from the cache
_WRITERS = 2  # direct writes at once


@dataclasses.dataclass
class RestoreProgress:
    """How far a restore (or verify) is, in bytes of the image."""

    total_bytes: int
    position: int = 0
    fetched_bytes: int = 0  # envelope bytes read from the store


RestoreCallback = Callable[[RestoreProgress], None]


@runtime_checkable
class BlockTarget(Protocol):
    """A disk written by offset through something other than an fd (a VM disk over NBD).

    The restore first zeroes the whole disk (`zero_at`, cheap on a thin image), then writes
    only the chunks that hold data, and ends with `flush`.
    """

    @property
    def size(self) -> int: ...

    def write_at(self, offset: int, data: bytes) -> None: ...

    def zero_at(self, offset: int, length: int) -> None: ...

    def flush(self) -> None: ...


class _DirectWrites:
    """Writes to an fd with direct I/O (`O_DIRECT`, decision 0012), several at once.

    Each piece is copied into a page-aligned buffer lent to its write and goes from there
    to the disk without passing through the page cache: no fresh pages are touched (on a
    virtual machine whose free memory the host backs only when first touched, that alone
    cost a restore more than the rest of its work), the image is not left cached, and the
    final fsync has only metadata left to write. `_WRITERS` threads write at once (one
    alone leaves the disk idle between requests); the caller waits when all are busy, so
    at most `_WRITERS` pieces and buffers are held. The figures:
    docs/decisions/0012-direct-io-for-what-the-engine-writes.md.

    What cannot go direct (an unaligned piece, like an image's last; or a file system that
    accepted the flag and refuses the write) is written through the page cache, and the
    fd's direct flag is then cleared for good; the final fsync covers both.
    """

    def __init__(self, fd: int, flags: int, buffer_size: int) -> None:
        self._fd = fd
        self._flags = flags  # the fd's own, given back at the end
        self._direct = True
        self._lock = threading.Lock()
        self._buffers = AlignedBuffers(buffer_size, AlignedMemory)
        self._slots = threading.BoundedSemaphore(_WRITERS)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            _WRITERS, thread_name_prefix="csbs-restore-write"
        )
        self._pending: set[concurrent.futures.Future[None]] = set()

    @classmethod
    def start(cls, fd: int, buffer_size: int) -> _DirectWrites | None:
        """Direct writes to `fd`, or None where its file system has no direct I/O."""
        flags = start_direct(fd)
        return None if flags is None else cls(fd, flags, buffer_size)

    def write(self, offset: int, data: bytes) -> None:
        """Queue `data` for `offset`; raises the error of an earlier write, if any."""
        self._reap()
        self._slots.acquire()
        try:
            # The piece travels in a list the write empties: the pool's work item would
            # otherwise keep it alive while it is written from its aligned copy.
            future = self._pool.submit(self._write, offset, [data])
        except BaseException:
            self._slots.release()
            raise
        self._pending.add(future)

    def _reap(self) -> None:
        for future in [f for f in self._pending if f.done()]:
            self._pending.discard(future)
            future.result()

    def _write(self, offset: int, holder: list[bytes]) -> None:
        try:
            data = holder.pop()
            if self._direct and offset % ALIGNMENT == 0:
                self._write_aligned(offset, data)
            else:
                self._end_direct()
                loops.pwrite_all(self._fd, memoryview(data), offset)
        finally:
            self._slots.release()

    def _write_aligned(self, offset: int, data: bytes) -> None:
        """Copy `data` into an aligned buffer, let it go (only the copy is held during the
        write) and write the copy direct; an unaligned tail through the page cache."""
        with self._buffers.lend() as buffer:
            aligned = min(len(data), buffer.capacity) // ALIGNMENT * ALIGNMENT
            with memoryview(data) as view:
                buffer.memory[:aligned] = view[:aligned]
                tail = bytes(view[aligned:])  # at most a chunk's unaligned end
            del data
            with buffer.view(aligned) as source:
                written = False
                if aligned:
                    try:
                        loops.pwrite_all(self._fd, source, offset)
                        written = True
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        # The flag was accepted, the write is not.
                if not written or tail:
                    self._end_direct()
                if not written:
                    loops.pwrite_all(self._fd, source, offset)
        if tail:
            loops.pwrite_all(self._fd, memoryview(tail), offset + aligned)

    def _end_direct(self) -> None:
        with self._lock:
            if self._direct:
                self._direct = False
                end_direct(self._fd, self._flags)

    def close(self) -> None:
        """Wait for every write (raising the first error); give the fd its flags back."""
        try:
            concurrent.futures.wait(self._pending)
            for future in self._pending:
                future.result()
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)
            self._end_direct()
            self._buffers.close()


class _Sink:
    """Where restored bytes go: an fd (pwrite, holes maybe skipped), a stream, or nowhere.

    An fd is written with direct I/O where its file system allows (`_DirectWrites`).
    Otherwise written ranges are handed to the kernel's writeback every `_WRITEBACK_BYTES`
    (`posix_fadvise(DONTNEED)` starts writing dirty pages without waiting for them), so the
    disk works while later chunks are fetched and decrypted and the final fsync only waits
    for the tail. DONTNEED cannot drop pages that are still dirty, so each range is advised
    a second time `_WRITEBACK_LAG` ranges later, once written back: its pages are then
    dropped and reused for the next writes (decision 0008).
    """

    def __init__(
        self,
        fd: int | None,
        stream: BinaryIO | None,
        sparse: bool,
        direct: _DirectWrites | None = None,
        block: BlockTarget | None = None,
    ) -> None:
        self.fd = fd
        self.block = block
        self.stream = stream
        self.sparse = sparse
        self.direct = direct
        self._unflushed_from: int | None = None
        self._unflushed_to = 0
        self._in_writeback: collections.deque[tuple[int, int]] = collections.deque()

    def data(self, offset: int, data: bytes) -> None:
        if self.block is not None:
            self.block.write_at(offset, data)
        elif self.direct is not None:
            self.direct.write(offset, data)
        elif self.fd is not None:
            loops.pwrite_all(self.fd, memoryview(data), offset)
            self._written(offset, offset + len(data))
        elif self.stream is not None:
            self.stream.write(data)

    def _written(self, start: int, end: int) -> None:
        if self._unflushed_from is None or start < self._unflushed_from:
            self._unflushed_from = start
        self._unflushed_to = max(self._unflushed_to, end)
        if self._unflushed_to - self._unflushed_from >= _WRITEBACK_BYTES:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Start writing back what was written since the last call (no waiting)."""
        if self.fd is None or self._unflushed_from is None:
            return
        written = (self._unflushed_from, self._unflushed_to - self._unflushed_from)
        self._unflushed_from = None
        self._advise_dontneed(*written)  # starts the writeback of this range
        self._in_writeback.append(written)
        if len(self._in_writeback) > _WRITEBACK_LAG:
            self._advise_dontneed(*self._in_writeback.popleft())  # written back by now: drop

    def drop_cached(self) -> None:
        """Drop the image's pages from the page cache (call once it is on disk)."""
        if self.fd is not None:
            self._in_writeback.clear()
            self._advise_dontneed(0, 0)

    def _advise_dontneed(self, offset: int, length: int) -> None:
        if self.fd is not None and hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)

    def zeros(self, offset: int, length: int) -> None:
        if self.sparse or (self.fd is None and self.stream is None and self.block is None):
            return
        while length > 0:
            step = min(length, len(_ZEROS))
            self.data(offset, _ZEROS[:step] if step < len(_ZEROS) else _ZEROS)
            offset += step
            length -= step


class BackupReader:
    """Reads the disks of a project's backups back."""

    def __init__(
        self,
        *,
        index: ChunkIndex,
        store: BlobStore,
        project_id: str,
        project_keys: keys.ProjectKeys,
        codec: envelope.Codec,
        threads: int,
    ) -> None:
        self._index = index
        self._store = store
        self._project_id = project_id
        self._keys = project_keys
        self._codec = codec
        self._threads = threads

    def load_manifest(self, backup_id: str, disk_id: str) -> manifest.Manifest:
        """Load and authenticate the manifest of one disk of a backup."""
        backup = self._index.backup(self._project_id, backup_id)
        records = [
            m for m in self._index.manifests(self._project_id, backup_id) if m.disk_id == disk_id
        ]
        if backup is None or backup.state == DELETING or not records:
            raise errors.RepositoryError(f"backup {backup_id} has no disk {disk_id}")
        name = layout.disk_manifest_name(self._project_id, backup_id, disk_id)
        try:
            blob = self._store.get(name)
        except BlobNotFound as exc:
            raise errors.ChunkNotFound(records[0].manifest_id) from exc
        return manifest.open_manifest(self._keys, blob, self._codec, records[0].manifest_id)

    def restore(
        self,
        backup_id: str,
        disk_id: str,
        target: str | os.PathLike[str] | int | BinaryIO | BlockTarget | None,
        *,
        progress: RestoreCallback | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> RestoreProgress:
        """Write the disk image to `target` and check its digest.

        `target` is a path (a regular file is created or truncated; a block device is
        written in place), an open fd (a regular file behind it is truncated first), a
        `BlockTarget` (zeroed, then written where the image holds data), a binary stream
        (written sequentially), or None (read and check only: `verify`).
        What malloc keeps free afterwards goes back to the system (`memtune`).
        """
        try:
            return self._restore(backup_id, disk_id, target, progress, cancel)
        finally:
            memtune.release_free_memory()

    def _restore(
        self,
        backup_id: str,
        disk_id: str,
        target: str | os.PathLike[str] | int | BinaryIO | BlockTarget | None,
        progress: RestoreCallback | None,
        cancel: Callable[[], bool] | None,
    ) -> RestoreProgress:
        the_manifest = self.load_manifest(backup_id, disk_id)
        if isinstance(target, BlockTarget):
            if target.size < the_manifest.logical_size:
                raise errors.RepositoryError(
                    f"the target disk ({target.size} bytes) is smaller than the backed-up "
                    f"disk ({the_manifest.logical_size} bytes)"
                )
            target.zero_at(0, target.size)
            result = self._run(
                the_manifest,
                backup_id,
                disk_id,
                _Sink(None, None, True, block=target),
                progress,
                cancel,
            )
            target.flush()
            return result
        if target is None:
            return self._run(
                the_manifest, backup_id, disk_id, _Sink(None, None, True), progress, cancel
            )
        if isinstance(target, (str, os.PathLike)):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                return self._restore_fd(the_manifest, backup_id, disk_id, fd, progress, cancel)
            finally:
                os.close(fd)
        if isinstance(target, int):
            return self._restore_fd(the_manifest, backup_id, disk_id, target, progress, cancel)
        return self._run(
            the_manifest, backup_id, disk_id, _Sink(None, target, False), progress, cancel
        )

    def _restore_fd(
        self,
        the_manifest: manifest.Manifest,
        backup_id: str,
        disk_id: str,
        fd: int,
        progress: RestoreCallback | None,
        cancel: Callable[[], bool] | None,
    ) -> RestoreProgress:
        mode = os.fstat(fd).st_mode
        regular = stat.S_ISREG(mode)
        if regular:
            # Empty, then sized: every byte not written reads as zero and takes no space.
            os.ftruncate(fd, 0)
            os.ftruncate(fd, the_manifest.logical_size)
        device = regular or stat.S_ISBLK(mode)
        # Buffers of a chunk, one per write running (a device's holes go 1 MiB at a time).
        direct = (
            _DirectWrites.start(fd, max(the_manifest.chunk_size, len(_ZEROS))) if device else None
        )
        sink = _Sink(fd, None, regular, direct)
        try:
            result = self._run(the_manifest, backup_id, disk_id, sink, progress, cancel)
        except BaseException:
            if direct is not None:
                with contextlib.suppress(Exception):  # the restore's own error matters
                    direct.close()
            raise
        if direct is not None:
            direct.close()  # raises the error of a failed write
        if device:  # a pipe or character device (/dev/null) has nothing to make durable
            os.fsync(fd)
            sink.drop_cached()
        return result

    def _run(
        self,
        the_manifest: manifest.Manifest,
        backup_id: str,
        disk_id: str,
        sink: _Sink,
        progress_cb: RestoreCallback | None,
        cancel: Callable[[], bool] | None,
    ) -> RestoreProgress:
        chunk_size = the_manifest.chunk_size
        size = the_manifest.logical_size
        progress = RestoreProgress(total_bytes=size)
        digest = manifest.restore_digest(the_manifest)
        # Chunks in flight, each held as envelope and plaintext: about 16 MiB at most.
        window = max(2, min(2 * self._threads, _IN_FLIGHT_BYTES // chunk_size))
        pending: collections.deque[
            tuple[int, int, str | None, concurrent.futures.Future[bytes] | None]
        ] = collections.deque()

        def write_head() -> None:
            index, count, chunk_id, future = pending.popleft()
            offset = index * chunk_size
            if future is None:
                length = min(size, offset + count * chunk_size) - offset
                sink.zeros(offset, length)
                digest.add_holes(count, length)
            else:
                assert chunk_id is not None
                data = future.result()  # checked against its chunk id
                sink.data(offset, data)
                digest.add_chunk(chunk_id, data)
                length = len(data)
            progress.position = offset + length
            if progress_cb is not None and future is not None and index % 16 == 0:
                progress_cb(dataclasses.replace(progress))

        with concurrent.futures.ThreadPoolExecutor(
            self._threads, thread_name_prefix="csbs-restore"
        ) as pool:
            try:
                for index, count, chunk_id, generation in self._entries(the_manifest):
                    if cancel is not None and cancel():
                        raise errors.Cancelled()
                    if chunk_id is None:
                        pending.append((index, count, None, None))
                    else:
                        fetch = pool.submit(self._fetch, chunk_id, generation, progress)
                        pending.append((index, 1, chunk_id, fetch))
                    while len(pending) > window or (pending and _ready(pending[0][3])):
                        write_head()
                while pending:
                    write_head()
            except BaseException:
                for _, _, _, future in pending:
                    if future is not None:
                        future.cancel()
                raise
        if digest.digest() != the_manifest.image_digest:
            raise errors.ImageDigestMismatch(backup_id, disk_id)
        if progress_cb is not None:
            progress_cb(dataclasses.replace(progress))
        return progress

    def _entries(
        self, the_manifest: manifest.Manifest
    ) -> Iterator[tuple[int, int, str | None, int]]:
        """(index, hole count or 1, chunk id or None, generation), generations looked up in
        batches."""
        batch: list[tuple[int, int, str | None]] = []

        def flush() -> Iterator[tuple[int, int, str | None, int]]:
            gens = self._index.generations(self._project_id, (c for _, _, c in batch if c))
            for index, count, chunk_id in batch:
                if chunk_id is None:
                    yield index, count, None, 0
                elif chunk_id not in gens:
                    raise errors.ChunkNotFound(chunk_id)
                else:
                    yield index, count, chunk_id, gens[chunk_id]
            batch.clear()

        index = 0
        holes = 0
        for entry in the_manifest.entries():
            if entry is None:
                holes += 1
            else:
                if holes:
                    batch.append((index - holes, holes, None))
                    holes = 0
                batch.append((index, 1, entry))
                if len(batch) >= _LOOKUP_BATCH:
                    yield from flush()
            index += 1
        if holes:
            batch.append((index - holes, holes, None))
        yield from flush()

    def _fetch(self, chunk_id: str, generation: int, progress: RestoreProgress) -> bytes:
        """The chunk's plaintext, checked against its id; a delta is rebuilt over its
        bases (at most `delta.MAX_DEPTH` of them)."""

        def fetched(size: int) -> None:
            progress.fetched_bytes += size  # approximate under threads; for display only

        return delta.ChunkFetcher(
            self._store, self._project_id, self._keys, self._codec, fetched
        ).fetch(chunk_id, generation)


def _ready(future: concurrent.futures.Future[bytes] | None) -> bool:
    return future is None or future.done()
