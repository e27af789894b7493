"""Fixed-size chunking of files: holes skipped unread, zero chunks detected, bounded reads."""

from __future__ import annotations

import errno
import os
import pathlib
import random
import time
from collections.abc import Iterator

import pytest

from csbs.repository import chunking

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


def supports_seek_data(directory: pathlib.Path) -> bool:
    """Whether the file system under `directory` reports holes through SEEK_DATA."""
    probe = directory / "probe"
    with open(probe, "wb") as f:
        f.truncate(16 * MIB)
        f.seek(8 * MIB)
        f.write(b"x")
    fd = os.open(probe, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_DATA) > 0
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


@pytest.fixture
def sparse_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    if not hasattr(os, "SEEK_DATA") or not supports_seek_data(tmp_path):
        pytest.skip("the temporary directory's file system does not report holes")
    return tmp_path


class ReadCounter:
    """Counts the bytes `os.pread` returns while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        self.calls = 0
        real = os.pread

        def counting(fd: int, length: int, offset: int) -> bytes:
            data = real(fd, length, offset)
            self.bytes += len(data)
            self.calls += 1
            return data

        monkeypatch.setattr(os, "pread", counting)


def make_sparse(path: pathlib.Path, size: int, writes: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)


def rebuild(chunks: Iterator[tuple[int, bytes | None]], size: int, chunk_size: int) -> bytes:
    """Reassemble an image from `iter_chunks` output, checking indexes are in order."""
    parts = []
    for expected, (index, data) in enumerate(chunks):
        assert index == expected
        length = min(chunk_size, size - index * chunk_size)
        if data is None:
            parts.append(bytes(length))
        else:
            assert isinstance(data, bytes)
            assert len(data) == length
            parts.append(data)
    return b"".join(parts)


@pytest.mark.parametrize("size", [64 * KIB, 128 * KIB, 1 * MIB, 4 * MIB, 8 * MIB])
def test_valid_chunk_sizes(size: int) -> None:
    assert chunking.validate_chunk_size(size) == size


@pytest.mark.parametrize("size", [0, 1, 4096, 32 * KIB, 96 * KIB, 3 * MIB, 16 * MIB, -64 * KIB])
def test_invalid_chunk_sizes(size: int, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError):
        chunking.validate_chunk_size(size)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError):
        list(chunking.iter_chunks(tmp_path / "f", size))


def test_default_chunk_size() -> None:
    assert chunking.DEFAULT_CHUNK_SIZE == 4 * MIB


def test_dense_file_round_trip_with_zero_chunk_and_short_tail(tmp_path: pathlib.Path) -> None:
    chunk_size = 64 * KIB
    rng = random.Random(1)
    content = (
        rng.randbytes(3 * chunk_size)
        + bytes(chunk_size)  # written zeros: a data region, still reported as a hole
        + rng.randbytes(chunk_size - 1)
        + b"\0"  # zeros at the end of a chunk do not make it a hole
        + bytes(chunk_size // 2)
        + b"\1"  # one non-zero byte at the end of the short last chunk
    )
    path = tmp_path / "disk.img"
    path.write_bytes(content)
    chunks = list(chunking.iter_chunks(path, chunk_size))
    assert [i for i, d in chunks if d is None] == [3]
    assert len(chunks) == 6
    assert rebuild(iter(chunks), len(content), chunk_size) == content


def test_all_zero_short_tail_is_a_hole(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\1" * 64 * KIB + bytes(1000))
    assert [(i, d is None) for i, d in chunking.iter_chunks(path, 64 * KIB)] == [
        (0, False),
        (1, True),
    ]


def test_empty_file_has_no_chunks(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert list(chunking.iter_chunks(path)) == []
    assert list(chunking.iter_runs(path)) == []


def test_sparse_file_holes_are_not_read(
    sparse_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk_size = 1 * MIB
    size = 1 * GIB + 12345
    writes = {
        0: b"boot sector",
        5 * MIB - 4: b"straddles chunks 4 and 5",
        300 * MIB: os.urandom(3 * MIB),  # chunks 300..302
        size - 10: b"tail bytes",
    }
    path = sparse_dir / "sparse.img"
    make_sparse(path, size, writes)
    counter = ReadCounter(monkeypatch)
    chunks = list(chunking.iter_chunks(path, chunk_size))
    data_indexes = [i for i, d in chunks if d is not None]
    assert data_indexes == [0, 4, 5, 300, 301, 302, 1024]
    assert len(chunks) == chunking.chunk_count(size, chunk_size) == 1025
    # Only the chunks holding data were read, each once.
    assert counter.bytes == 6 * chunk_size + 12345
    assert counter.calls == 7
    for index, data in chunks:
        assert data == expected_chunk(writes, size, chunk_size, index)


def expected_chunk(
    writes: dict[int, bytes], size: int, chunk_size: int, index: int
) -> bytes | None:
    """The content `iter_chunks` should give for chunk `index` of a file made by
    `make_sparse` (None if all zeros), computed without building the whole image."""
    start = index * chunk_size
    chunk = bytearray(min(chunk_size, size - start))
    for offset, data in writes.items():
        lo, hi = max(offset, start), min(offset + len(data), start + len(chunk))
        if lo < hi:
            chunk[lo - start : hi - start] = data[lo - offset : hi - offset]
    return None if chunk.count(0) == len(chunk) else bytes(chunk)


def test_huge_sparse_file_is_walked_quickly(
    sparse_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 64 * GIB
    path = sparse_dir / "huge.img"
    make_sparse(path, size, {0: b"start", 17 * GIB: b"middle", size - 1: b"e"})
    counter = ReadCounter(monkeypatch)
    started = time.monotonic()
    runs = list(chunking.iter_runs(path, 4 * MIB))
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"walking 64 GiB of holes took {elapsed:.2f} s"
    assert counter.bytes == 3 * 4 * MIB
    data = [r.index for r in runs if isinstance(r, chunking.Data)]
    assert data == [0, 17 * 256, 16 * 1024 - 1]
    assert sum(1 if isinstance(r, chunking.Data) else r.count for r in runs) == 16 * 1024
    # Holes come as a few long runs, not one object per chunk.
    assert len(runs) <= 6
    started = time.monotonic()
    assert sum(1 for _ in chunking.iter_chunks(path, 4 * MIB)) == 16 * 1024
    assert time.monotonic() - started < 1.0


def test_file_that_is_one_hole(sparse_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = sparse_dir / "hole.img"
    make_sparse(path, 10 * MIB + 1, {})
    counter = ReadCounter(monkeypatch)
    assert list(chunking.iter_runs(path, 1 * MIB)) == [chunking.Holes(0, 11)]
    assert counter.bytes == 0


def test_fallback_without_seek_data(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk_size = 64 * KIB
    size = 20 * chunk_size + 7
    path = tmp_path / "img"
    make_sparse(path, size, {3 * chunk_size: b"data", size - 1: b"z"})
    real_lseek = os.lseek

    def no_seek_data(fd: int, offset: int, whence: int) -> int:
        if whence in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_lseek(fd, offset, whence)

    monkeypatch.setattr(os, "lseek", no_seek_data)
    counter = ReadCounter(monkeypatch)
    chunks = list(chunking.iter_chunks(path, chunk_size))
    assert [i for i, d in chunks if d is not None] == [3, 20]
    assert counter.bytes == size, "everything was read instead"
    expected = bytearray(size)
    expected[3 * chunk_size : 3 * chunk_size + 4] = b"data"
    expected[-1:] = b"z"
    assert rebuild(iter(chunks), size, chunk_size) == bytes(expected)


def test_open_file_descriptor_is_left_open(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"\7" * 100 * KIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = list(chunking.iter_chunks(fd, 64 * KIB))
        assert [len(d or b"") for _, d in chunks] == [64 * KIB, 36 * KIB]
        os.fstat(fd)  # still open
        assert chunking.device_size(fd) == 100 * KIB
    finally:
        os.close(fd)


def test_path_as_string(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"abc")
    assert list(chunking.iter_chunks(str(path), 64 * KIB)) == [(0, b"abc")]


def test_is_zero() -> None:
    assert chunking.is_zero(b"")
    assert chunking.is_zero(bytes(10))
    assert chunking.is_zero(bytearray(9 * MIB))
    assert chunking.is_zero(memoryview(bytes(100))[10:])
    assert not chunking.is_zero(b"\0" * 99 + b"\1")
    assert not chunking.is_zero(bytes(9 * MIB) + b"\1")
    big = bytearray(9 * MIB)
    big[8 * MIB + 5] = 1
    assert not chunking.is_zero(big)


def test_chunk_count() -> None:
    assert chunking.chunk_count(0, 64 * KIB) == 0
    assert chunking.chunk_count(1, 64 * KIB) == 1
    assert chunking.chunk_count(64 * KIB, 64 * KIB) == 1
    assert chunking.chunk_count(64 * KIB + 1, 64 * KIB) == 2


def test_hole_runs_are_merged(sparse_dir: pathlib.Path) -> None:
    chunk_size = 64 * KIB
    path = sparse_dir / "img"
    # chunk 0 data; 1-2 written zeros; 3-9 sparse hole; 10 data; 11 sparse; 12 written zeros
    make_sparse(
        path,
        13 * chunk_size,
        {0: b"a", chunk_size: bytes(2 * chunk_size), 10 * chunk_size: b"b"},
    )
    with open(path, "r+b") as f:
        f.seek(12 * chunk_size)
        f.write(bytes(chunk_size))
    assert list(chunking.iter_runs(path, chunk_size)) == [
        chunking.Data(0, b"a" + bytes(chunk_size - 1)),
        chunking.Holes(1, 9),
        chunking.Data(10, b"b" + bytes(chunk_size - 1)),
        chunking.Holes(11, 2),
    ]
