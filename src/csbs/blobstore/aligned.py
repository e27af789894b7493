"""Blobs built in page-aligned memory, which the local store writes with direct I/O.

A backup seals each new chunk straight into an `AlignedBuffer` and hands the store an
`AlignedBlob` of it: the local store then writes it to disk without a copy and without
the page cache (decision 0012); the other stores take its bytes. The memory and the
switches of direct I/O are `csbs.fileio.direct`'s.
"""

from __future__ import annotations

import mmap

from csbs.fileio.direct import AlignedMemory, padded


class AlignedBuffer(AlignedMemory):
    """Page-aligned memory for blobs of up to `capacity` bytes."""

    def blob(self, length: int) -> AlignedBlob:
        """The first `length` bytes, as a blob value for `BlobStore.put`."""
        if not 0 <= length <= self.capacity:
            raise ValueError(f"a blob of {length} bytes does not fit in {self.capacity}")
        return AlignedBlob(self.memory, length)


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
