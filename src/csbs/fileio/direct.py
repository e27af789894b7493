"""Direct I/O: turning it on and off for an fd, and the page-aligned memory it writes from.

What the engine writes goes to disk around the page cache where the file system allows it
(decision 0012): a backup's chunk blobs (`csbs.blobstore.aligned`, written by the local
store) and a restored image (`csbs.repository.reader`). Direct I/O needs offsets, lengths
and memory aligned to `ALIGNMENT`; `AlignedMemory` is such memory, and `AlignedBuffers`
lends it to one writer at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

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


class AlignedMemory:
    """Page-aligned memory (an anonymous mapping) for writes of up to `capacity` bytes.

    Its pages are the process's own once touched and go back to the system on `close`.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        # Room for the padding of `capacity` bytes, and never an empty mapping.
        self.memory = mmap.mmap(-1, padded(capacity) or ALIGNMENT)

    def view(self, length: int) -> memoryview:
        """The first `length` bytes, without a copy."""
        return memoryview(self.memory)[:length]

    def close(self) -> None:
        # A failed write's traceback may still hold a view of the memory: it is then
        # unmapped when that goes.
        with contextlib.suppress(BufferError):
            self.memory.close()


MemoryT = TypeVar("MemoryT", bound=AlignedMemory)


class AlignedBuffers(Generic[MemoryT]):
    """Buffers of `capacity` bytes (made by `kind`) lent to one writer at a time; one is
    made when none is free, so there are as many as writes ran at once. `close` frees them
    all."""

    def __init__(self, capacity: int, kind: Callable[[int], MemoryT]) -> None:
        self._capacity = capacity
        self._kind = kind
        self._lock = threading.Lock()
        self._free: list[MemoryT] = []
        self._all: list[MemoryT] = []

    @contextlib.contextmanager
    def lend(self) -> Iterator[MemoryT]:
        with self._lock:
            buffer = self._free.pop() if self._free else None
        if buffer is None:
            buffer = self._kind(self._capacity)
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
