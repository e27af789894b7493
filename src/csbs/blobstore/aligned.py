"""Page-aligned memory and direct I/O: how the engine writes around the page cache.

A backup seals each new chunk straight into an `AlignedBuffer` and hands the store an
`AlignedBlob` of it: the local store then writes it to disk without a copy and without
the page cache (decision 0012); the other stores take its bytes. A restore writes the
image from such buffers too (`csbs.repository.reader`).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
from collections.abc import Iterator

ALIGNMENT = 4096  # bytes; offsets, lengths and addresses of direct I/O (any block size up to it)
O_DIRECT: int = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere writes use the page cache


def start_direct(fd: int) -> int | None:
    """Turn direct I/O on for `fd`; its flags before, or None where its file system (or
    the OS) has no direct I/O. Give the flags back with `end_direct`."""
    if not O_DIRECT:
        return None
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | O_DIRECT)
    except OSError:
        return None
    return flags


def end_direct(fd: int, flags: int) -> None:
    """Give `fd` the flags `start_direct` returned."""
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def padded(length: int) -> int:
    """`length` rounded up to a multiple of `ALIGNMENT`."""
    return -(-length // ALIGNMENT) * ALIGNMENT


class AlignedBuffer:
    """Page-aligned memory (an anonymous mapping) for blobs of up to `capacity` bytes.

    Its pages are the process's own once touched and go back to the system on `close`.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        # Room for the padding of a blob of `capacity` bytes, and never an empty mapping.
        self.memory = mmap.mmap(-1, padded(capacity) or ALIGNMENT)

    def blob(self, length: int) -> AlignedBlob:
        """The first `length` bytes, as a blob value for `BlobStore.put`."""
        if not 0 <= length <= self.capacity:
            raise ValueError(f"a blob of {length} bytes does not fit in {self.capacity}")
        return AlignedBlob(self.memory, length)

    def close(self) -> None:
        # A failed write's traceback may still hold a view of the memory: it is then
        # unmapped when that goes.
        with contextlib.suppress(BufferError):
            self.memory.close()


class AlignedBlob:
    """The first `length` bytes of an `AlignedBuffer`, handed to `BlobStore.put`.

    Valid until its buffer is reused; a store must not keep it once `put` returns.
    """

    __slots__ = ("_memory", "length")

    def __init__(self, memory: mmap.mmap, length: int) -> None:
        self._memory = memory
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __bytes__(self) -> bytes:
        return self._memory[: self.length]

    def view(self) -> memoryview:
        """The blob's bytes, without a copy."""
        return memoryview(self._memory)[: self.length]

    def padded_view(self) -> memoryview:
        """The blob's bytes and zeros up to the next `ALIGNMENT` boundary: what a direct
        write takes (the file is then truncated to `length`)."""
        end = padded(self.length)
        self._memory[self.length : end] = bytes(end - self.length)
        return memoryview(self._memory)[:end]


class AlignedBuffers:
    """Buffers of `capacity` bytes lent to one writer at a time; one is made when none is
    free, so there are as many as writes ran at once. `close` frees them all."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._free: list[AlignedBuffer] = []
        self._all: list[AlignedBuffer] = []

    @contextlib.contextmanager
    def lend(self) -> Iterator[AlignedBuffer]:
        with self._lock:
            buffer = self._free.pop() if self._free else None
        if buffer is None:
            buffer = AlignedBuffer(self._capacity)
            with self._lock:
                self._all.append(buffer)
        try:
            yield buffer
        finally:
            with self._lock:
                self._free.append(buffer)

    def close(self) -> None:
        """Give the memory back (call once no write runs)."""
        with self._lock:
            for buffer in self._all:
                buffer.close()
            self._all.clear()
            self._free.clear()
