"""Reads and writes of exactly the bytes asked for: the loops around short counts.

`os.pread`, `os.write` and `os.pwrite` may move fewer bytes than asked (a signal, a huge
size, a pipe); every reader of a whole range and every writer of a whole buffer in csbs
goes through these instead of looping on its own.
"""

from __future__ import annotations

import errno
import os


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """The `length` bytes of `fd` at `offset`; OSError (EIO) if the file ends before.

    pread goes straight into a fresh bytes object: the one copy the kernel makes anyway.
    Reading into a reused buffer would need a second copy to hand the data on to other
    threads, which measured slower for the same bound on memory (the backup's reads;
    docs/decisions/0015-malloc-tuned-at-process-start.md).
    """
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    # Short reads are legal; collect the rest piece by piece.
    parts = [data]
    got = len(data)
    while got < length:
        piece = os.pread(fd, length - got, offset + got)
        if not piece:
            raise OSError(errno.EIO, f"unexpected end of data at offset {offset + got}")
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of `data` at `fd`'s file offset."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """Write all of `view` at `offset` (the fd's file offset stays where it is)."""
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
