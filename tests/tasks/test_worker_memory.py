"""Peak RSS of a real `csbs worker` process through a backup, an incremental and a restore."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import clean_env, csbs_command

MiB = 1024 * 1024
#: What issue 21 allows the whole worker process (its imports, its idle heap, one pipeline).
PEAK_LIMIT_KIB = 150 * 1024
IMAGE_BYTES = 512 * MiB


def _image(path: Path, size: int, seed: int) -> None:
    """Data in every MiB: random extents, and text-like ones zstd halves (no holes)."""
    rng = random.Random(seed)
    text = rng.randbytes(MiB // 2).hex().encode()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            if rng.random() < 0.4:
                f.write(rng.randbytes(MiB))
            else:
                cut = rng.randrange(MiB)
                f.write(text[cut:] + text[:cut])


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.slow
def test_worker_process_peak_rss_through_backup_incremental_and_restore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "csbs.db"
    env = clean_env(
        CSBS_DATA_DIR=str(data),
        CSBS_DATABASE_URL=f"sqlite:///{db}",
        CSBS_LOG_LEVEL="WARNING",
        CSBS_WORKER_IDLE_POLL_SECONDS="0.1",
    )

    def csbs(*args: str) -> str:
        done = subprocess.run(
            [*csbs_command(), *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    data.mkdir(mode=0o700)
    (data / "disks").mkdir()
    image = data / "disks" / "vda.img"
    _image(image, IMAGE_BYTES, seed=21)
    target = data / "disks" / "target.img"
    with open(target, "wb") as f:
        f.truncate(IMAGE_BYTES)
    csbs("db", "upgrade")
    csbs("admin", "project", "create", "mem")
    source_server = csbs("server", "add", "--project", "mem", "--name", "vm", "--disk", str(image))
    target_server = csbs("server", "add", "--project", "mem", "--name", "to", "--disk", str(target))
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [*csbs_command(), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        peaks: dict[str, int] = {}

        def step(name: str, *args: str) -> str:
            out = csbs(*args)
            with sqlite3.connect(db) as c:
                (status,) = c.execute(
                    "SELECT status FROM tasks ORDER BY created_at DESC LIMIT 1"
                ).fetchone()
            assert status == "success", (tmp_path / "worker.log").read_text()[-2000:]
            peaks[name] = _status_kib(worker.pid, "VmHWM")
            return out

        first = step("backup", "backup", "create", source_server.split()[-1], "--wait")
        with open(image, "r+b") as f:  # 1 % rewritten as scattered 4 KiB blocks
            rng = random.Random(22)
            for block in rng.sample(range(IMAGE_BYTES // 4096), IMAGE_BYTES // 100 // 4096):
                f.seek(block * 4096)
                f.write(rng.randbytes(4096))
        second = step("incremental", "backup", "create", source_server.split()[-1], "--wait")
        step("restore", "restore", first.split()[-1], "--to", target_server.split()[-1], "--wait")
    finally:
        worker.terminate()
        worker.wait(60)
    assert first.split()[-1] != second.split()[-1]
    _image(tmp_path / "expected.img", IMAGE_BYTES, seed=21)
    assert _same(tmp_path / "expected.img", target)
    # VmHWM is the process's peak since it started: each figure includes every step before.
    assert peaks["restore"] < PEAK_LIMIT_KIB, {k: f"{v / 1024:.0f} MiB" for k, v in peaks.items()}


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 * MiB), fb.read(8 * MiB)
            if x != y:
                return False
            if not x:
                return True
