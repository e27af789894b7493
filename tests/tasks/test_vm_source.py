"""A VM disk's NBD export as a chunk source, over a real qemu-nbd export of an image."""

from __future__ import annotations

import os
import random
from pathlib import Path

from csbs.hypervisor.nbd import NbdExport, QemuNbd
from csbs.repository import chunking
from csbs.tasks.vmsource import ExportChunks

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


def test_reading_a_disk_again_and_again_keeps_no_memory(tmp_path: Path) -> None:
    """libnbd 1.14's asynchronous reads kept every buffer they read into: a worker
    backing up VMs grew by every byte it read."""
    image = tmp_path / "disk.raw"
    with open(image, "wb") as f:
        f.write(random.Random(6).randbytes(64 * CHUNK))

    def rss_mib() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // CHUNK

    with QemuNbd(image, "raw", writable=False) as server, NbdExport(server.socket) as export:
        for _ in ExportChunks(export).runs(CHUNK):
            pass
        before = rss_mib()
        for _ in range(4):  # 256 MiB read
            read = sum(1 for _ in ExportChunks(export).runs(CHUNK))
            assert read == 64
        assert rss_mib() - before < 32
