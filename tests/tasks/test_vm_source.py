"""A VM disk's NBD export as a chunk source, over a real qemu-nbd export of an image."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csbs.hypervisor.nbd import NbdExport, QemuNbd
from csbs.repository import chunking
from csbs.tasks.vmsource import ExportChunks, _read_ahead

CHUNK = 1024 * 1024


def test_a_chunk_read_again_after_the_reads_went_past_it_has_its_bytes(tmp_path: Path) -> None:
    """A known chunk whose stored copy was swept meanwhile is read again at the end of its
    batch, after the in-order reads (and their block status) went past it."""
    image = tmp_path / "disk.raw"
    rng = random.Random(5)
    with open(image, "wb") as f:
        f.truncate(8 * CHUNK)
        for index in (0, 3, 6):
            f.seek(index * CHUNK + 4096)
            f.write(rng.randbytes(CHUNK // 2))
    expected = image.read_bytes()
    with QemuNbd(image, "raw", writable=False) as server, NbdExport(server.socket) as export:
        source = ExportChunks(export)
        runs = list(source.runs(CHUNK))
        data = {r.index: r.data for r in runs if isinstance(r, chunking.Data)}
        assert sorted(data) == [0, 3, 6]
        for index in range(8):
            piece = expected[index * CHUNK : (index + 1) * CHUNK]
            assert source.read_chunk(index, CHUNK) == piece
            if index in data:
                assert data[index] == piece


def test_the_reader_thread_stays_bounded_passes_errors_and_stops_with_its_consumer() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def items(fail_at: int | None = None) -> Iterator[int]:
        try:
            for i in range(100):
                if i == fail_at:
                    raise OSError("the export went away")
                produced.append(i)
                yield i
        finally:
            closed.set()

    ahead = _read_ahead(items(), 2)
    assert next(ahead) == 0
    time.sleep(0.3)
    # One taken, two waiting, one held by the reader waiting for room: never the rest.
    assert len(produced) <= 4
    ahead.close()  # the consumer stops (a cancel, an error of the writer)
    assert closed.wait(5), "the reader's iterator was closed"
    assert len(produced) <= 5

    produced.clear()
    closed.clear()
    got = []
    with pytest.raises(OSError, match="went away"):
        for i in _read_ahead(items(fail_at=3), 2):
            got.append(i)
    assert got == [0, 1, 2], "the error comes in its place, after what was read before it"
    assert closed.wait(5)
