"""Real processes: kill -9 in the middle of a deletion, and peak memory of a large backup."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys

import pytest

from csbs.blobstore import BlobStore
from csbs.domain.clock import FrozenClock
from csbs.repository import layout
from tests.repository.conftest import SMALL_CHUNK, RepoFactory, write_image

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.repository.child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_kill_9_during_deletion_then_rerun_is_exact(
    make_repo: RepoFactory,
    local_store: BlobStore,
    db_url: str,
    tmp_path: pathlib.Path,
    clock: FrozenClock,
) -> None:
    repo = make_repo(local_store, batch_chunks=2)
    size = 48 * SMALL_CHUNK
    kept = write_image(tmp_path / "a.img", size, seed=1)
    repo.backup_writer("p1", "keep").write_disk("vda", kept)
    repo.seal_backup("p1", "keep")
    usage = repo.usage("p1")
    doomed = write_image(tmp_path / "b.img", size, seed=2)
    with open(doomed, "r+b") as f:  # share half the image with the kept backup
        f.write(kept.read_bytes()[: size // 2])
    repo.backup_writer("p1", "doomed").write_disk("vda", doomed)
    repo.seal_backup("p1", "doomed")
    assert repo.usage("p1") != usage

    rng = random.Random(3)
    for _ in range(3):  # kill it three times at different points, resuming each time
        child = _child("delete", db_url, local_store.root, "p1", "doomed")  # type: ignore[attr-defined]
        assert child.stdout is not None
        wanted = rng.randint(1, 4)
        for _line in range(wanted):
            if not child.stdout.readline():
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
    record = repo.index.backup("p1", "doomed")
    assert record is not None and 0 < record.released_seq < record.next_seq

    result = repo.delete_backup("p1", "doomed")
    assert result.existed
    assert repo.usage("p1") == usage
    clock.advance(61)
    repo.sweep("p1")
    report = repo.check(read_data=True)
    assert report.ok, report
    repo.verify("p1", "keep")


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 5, 17])
def test_kill_9_during_a_maintenance_sweep_loses_and_leaks_nothing(
    make_repo: RepoFactory,
    local_store: BlobStore,
    db_url: str,
    tmp_path: pathlib.Path,
    kill_after: int,
) -> None:
    """A sweep (what a maintenance task runs) killed between its blob deletions: the next
    sweep removes what the killed one left, and the kept backup is whole."""
    repo = make_repo(local_store, sweep_grace_seconds=0)
    size = 48 * SMALL_CHUNK
    rng = random.Random(kill_after)
    kept = tmp_path / "a.img"
    kept.write_bytes(rng.randbytes(size))
    repo.backup_writer("p1", "keep").write_disk("vda", kept)
    repo.seal_backup("p1", "keep")
    usage = repo.usage("p1")
    doomed = tmp_path / "b.img"  # shares half the image with the kept backup
    doomed.write_bytes(kept.read_bytes()[: size // 2] + rng.randbytes(size // 2))
    repo.backup_writer("p1", "doomed").write_disk("vda", doomed)
    repo.seal_backup("p1", "doomed")
    chunks = layout.chunks_prefix("p1")
    with_both = set(local_store.list(chunks))
    repo.delete_backup("p1", "doomed")
    pending = repo.pending_release("p1")
    assert pending.chunks == size // 2 // SMALL_CHUNK and repo.sweep_due("p1")

    child = _child("sweep", db_url, local_store.root, "p1")  # type: ignore[attr-defined]
    assert child.stdout is not None
    for _line in range(kill_after):
        assert child.stdout.readline().startswith("deleted "), "the sweep ended too soon"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    left = set(local_store.list(chunks))
    assert len(with_both) - pending.chunks < len(left) < len(with_both)  # cut in the middle

    result = repo.sweep("p1")  # the next maintenance
    assert result.garbage_blobs + result.chunks > 0
    assert repo.pending_release("p1").chunks == 0 and not repo.sweep_due("p1")
    assert len(set(local_store.list(chunks))) == len(with_both) - pending.chunks
    assert repo.usage("p1") == usage
    report = repo.check(read_data=True)
    assert report.ok, report
    repo.verify("p1", "keep")


@pytest.mark.slow
def test_backup_of_4gib_sparse_noisy_image_stays_under_150mib(tmp_path: pathlib.Path) -> None:
    image = tmp_path / "big.img"
    rng = random.Random(5)
    size = 4 * 1024**3
    with open(image, "wb") as f:
        f.truncate(size)
        # Noise every 16 MiB (4 KiB random, a chunk of it compressible) and a few dense
        # random extents: SEEK_DATA finds data all over, hashes and uploads are real.
        for offset in range(0, size, 16 * 1024 * 1024):
            f.seek(offset + rng.randrange(1024 * 1024))
            f.write(rng.randbytes(4096))
        for offset in range(0, size, 512 * 1024 * 1024):
            f.seek(offset + 8 * 1024 * 1024)
            f.write(rng.randbytes(16 * 1024 * 1024))
    child = _child("backup", f"sqlite:///{tmp_path / 'm.db'}", str(tmp_path / "blobs"), str(image))
    out, _ = child.communicate(timeout=240)
    assert child.returncode == 0
    peak_kib, _rusage_kib, read, new = (int(x) for x in out.split())
    assert read >= 128 * 1024 * 1024 and new > 0
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
