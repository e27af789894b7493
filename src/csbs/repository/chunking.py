"""Fixed-size chunks of a file or block device, skipping holes without reading them."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
from collections.abc import Iterator

from csbs.fileio import loops

MIN_CHUNK_SIZE = 64 * 1024  # bytes
MAX_CHUNK_SIZE = 8 * 1024 * 1024  # bytes
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024  # bytes

# All-zero reference for zero detection. `bytes(n)` is calloc'ed: untouched pages share
# the kernel's zero page, so this costs address space, not memory.
_ZEROS = bytes(MAX_CHUNK_SIZE)

# errno values with which lseek(SEEK_DATA/SEEK_HOLE) says "not supported here" (old file
# systems, some block devices, pipes); reading everything is then the fallback.
_NO_SEEK_DATA = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ESPIPE})


def validate_chunk_size(chunk_size: int) -> int:
    """Return `chunk_size` if it is a power of two in [64 KiB, 8 MiB], else raise ValueError."""
    if (
        not isinstance(chunk_size, int)
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
        or chunk_size & (chunk_size - 1)
    ):
        raise ValueError(
            f"chunk size must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}, "
            f"got {chunk_size!r}"
        )
    return chunk_size


def chunk_count(logical_size: int, chunk_size: int) -> int:
    """Return how many chunks cover `logical_size` bytes (the last one may be short)."""
    return -(-logical_size // chunk_size)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """Tell whether every byte of `data` is zero.

    `bytes.startswith` takes any buffer and compares with memcmp (tens of GB/s);
    `==` between memoryviews would compare element by element, 100 times slower.
    """
    view = memoryview(data).cast("B")
    step = len(_ZEROS)
    return all(_ZEROS.startswith(view[i : i + step]) for i in range(0, len(view), step))


@dataclasses.dataclass(frozen=True, slots=True)
class Data:
    """Chunk `index`, which holds `data` (not all zeros).

    `changed`: what a source that tracks changes (a VM's dirty bitmap) knows changed in
    this chunk since the disk's previous backup, as (offset, length) ranges within the
    chunk; None when it does not know. The writer stores a chunk that changed in part as
    those regions over the previous version (`delta.py`).
    """

    index: int
    data: bytes
    changed: tuple[tuple[int, int], ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Known:
    """Chunk `index`, known without reading it to be the stored chunk `chunk_id` (`length`
    bytes): an unchanged chunk of an earlier backup of the same disk."""

    index: int
    chunk_id: str
    length: int


@dataclasses.dataclass(frozen=True, slots=True)
class Holes:
    """Chunks `start` .. `start + count - 1`, all zeros (never stored)."""

    start: int
    count: int


def device_size(fd: int) -> int:
    """Return the size in bytes of the open file or block device `fd`."""
    # For block devices st_size is 0; seeking to the end works for both.
    return os.lseek(fd, 0, os.SEEK_END)


def iter_runs(
    source: int | str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[Data | Holes]:
    """Yield the chunks of `source` in order, as `Data` chunks and maximal runs of `Holes`.

    `source` is a path (opened read-only here) or an open file descriptor (left open;
    the walk moves its file offset).
    The last chunk may be shorter than `chunk_size`. A chunk is a hole when it lies in a
    hole of a sparse file, which is detected with SEEK_DATA/SEEK_HOLE and never read,
    or when it was read and is all zeros. Memory use is one chunk at a time, and holes
    cost no reads however long they are.

    The content must not change during the walk (back up a snapshot or a reflink copy).
    """
    validate_chunk_size(chunk_size)
    if isinstance(source, int):
        yield from _iter_fd(source, chunk_size)
        return
    fd = _open_for_reading(source)
    try:
        yield from _iter_fd(fd, chunk_size)
    finally:
        os.close(fd)


def iter_chunks(
    source: int | str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[tuple[int, bytes | None]]:
    """Yield `(index, data)` for every chunk of `source` in order; `data` is None for holes.

    The per-chunk view of `iter_runs` (see there): a long hole costs one tuple per chunk
    but still no read.
    """
    for run in iter_runs(source, chunk_size):
        if isinstance(run, Data):
            yield run.index, run.data
        else:
            for index in range(run.start, run.start + run.count):
                yield index, None


def _open_for_reading(path: str | os.PathLike[str]) -> int:
    flags = os.O_RDONLY | os.O_CLOEXEC
    # O_NOATIME spares a metadata write per file; only the owner (or root) may use it.
    with contextlib.suppress(PermissionError):
        return os.open(path, flags | getattr(os, "O_NOATIME", 0))
    return os.open(path, flags)


def _iter_fd(fd: int, chunk_size: int) -> Iterator[Data | Holes]:
    size = device_size(fd)
    total = chunk_count(size, chunk_size)
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    # Only regular files have holes the kernel reports; block devices get plain reads.
    sparse = stat.S_ISREG(os.fstat(fd).st_mode) and hasattr(os, "SEEK_DATA")
    # [extent_start, extent_end): the data extent (from SEEK_DATA/SEEK_HOLE) around the
    # current position, so that a long data region costs two lseeks, not two per chunk.
    extent_start = extent_end = -1
    holes = 0  # hole chunks just before `index` not yet yielded, merged into one run
    index = 0
    while index < total:
        offset = index * chunk_size
        end = min(offset + chunk_size, size)
        if sparse and not (extent_start < end and offset < extent_end):
            found = _next_data(fd, offset, size)
            if found is None:
                sparse = False  # unsupported here; read everything from now on
            else:
                data_start, data_end = found
                if data_start >= end:
                    # Every chunk before the one holding data_start is a hole (all the
                    # rest if no data follows). Progress: data_start >= end, so the chunk
                    # holding it comes after this one.
                    next_index = total if data_start >= size else data_start // chunk_size
                    holes += next_index - index
                    index = next_index
                    continue
                extent_start, extent_end = data_start, data_end
        data = loops.pread_exact(fd, end - offset, offset)
        if _ZEROS.startswith(data):
            holes += 1
        else:
            if holes:
                yield Holes(index - holes, holes)
                holes = 0
            yield Data(index, data)
        index += 1
    if holes:
        yield Holes(total - holes, holes)


def _next_data(fd: int, offset: int, size: int) -> tuple[int, int] | None:
    """Return the data extent at or after `offset` ((size, size) if none), or None if the
    file system cannot tell."""
    try:
        start = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return size, size  # only a hole from offset to the end
        if exc.errno in _NO_SEEK_DATA:
            return None
        raise
    try:
        end = os.lseek(fd, start, os.SEEK_HOLE)
    except OSError as exc:
        if exc.errno in _NO_SEEK_DATA:
            return None
        raise
    return start, min(end, size)
