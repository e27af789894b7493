"""Blobs built in page-aligned memory, which the local store writes with direct I/O.

A backup seals each new chunk straight into an `AlignedBuffer` and hands the store an
`AlignedBlob` of it: the local store then writes it to disk without a copy and without
the page cache (decision 0012); the other stores take its bytes.
"""

from __future__ import annotations

import contextlib
import mmap

ALIGNMENT = 4096  # bytes; offsets, lengths and addresses of direct I/O (any block size up to it)


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
