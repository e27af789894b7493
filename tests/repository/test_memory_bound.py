"""The pipelines hold a bounded number of chunks, whatever the disk's size.

tracemalloc counts the bytes objects Python holds (chunks read, envelopes fetched,
plaintexts, compressed payloads), from every thread; the aligned buffers of direct I/O are
mmaps it does not count, and they are bounded by the upload and writer counts.
"""

from __future__ import annotations

import pathlib
import random
import tracemalloc

from csbs.blobstore import BlobStore
from csbs.repository import reader
from csbs.repository.writer import PipelineLimits
from tests.repository.conftest import RepoFactory

CHUNK = 1024 * 1024
CHUNKS = 48


def _image(path: pathlib.Path) -> pathlib.Path:
    rng = random.Random(4)
    text = rng.randbytes(CHUNK // 4).hex().encode()
    with open(path, "wb") as f:
        for i in range(CHUNKS):  # every chunk new: each one goes through the whole pipeline
            f.write(rng.randbytes(CHUNK) if i % 2 else rng.randbytes(8) + text[8 : CHUNK // 2] * 2)
    return path


def test_limits_on_two_cores() -> None:
    limits = PipelineLimits.for_chunk_size(4 * 1024 * 1024, 2, 8 * 1024 * 1024)
    # One chunk read ahead per hashing thread, a reference batch of 8 MiB, three uploads.
    assert (limits.window, limits.batch_chunks, limits.uploads, limits.sealers) == (2, 2, 3, 2)


def test_backup_and_restore_hold_a_bounded_number_of_chunks(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store, chunk_size=CHUNK, batch_bytes=2 * CHUNK)
    image = _image(tmp_path / "a.img")
    tracemalloc.start()
    try:
        repo.backup_writer("p1", "b1").write_disk("vda", image)
        _, backup_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        repo.restore("p1", "b1", "vda", tmp_path / "out.img")
        _, restore_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out.img").read_bytes() == image.read_bytes()
    # Backup: window + 1 hashing, a batch, one plaintext per upload and a compressed payload
    # per sealer, plus the chunk being read: 3 + 2 + 3 + 2 + 1 = 11 chunks at most.
    assert backup_peak < 11 * CHUNK + CHUNK // 2, backup_peak / CHUNK
    # Restore (io_threads 4, so a window of 8 of these chunks, 8 MiB): the window plus the
    # one fetched beyond it, each a plaintext once fetched; one more buffer for each of the
    # 4 fetches being opened (envelope or payload next to its plaintext); one piece per
    # direct writer until copied: 9 + 4 + 2 = 15 at most; 10.3 to 12.3 measured, timing
    # deciding. The 16 MiB read ahead before took it to 18.
    window = max(2, min(2 * 4, reader._IN_FLIGHT_BYTES // CHUNK))
    bound = (window + 1 + 4 + reader._WRITERS) * CHUNK
    assert restore_peak < bound, restore_peak / CHUNK
