"""Where a first backup's and a restore's time goes: the pipeline against the disk.

    python -m bench.pipeline [--size 1GiB] [--work-dir /var/tmp] [--runs 2]

Backs up the image of `bench.repo` (same generator) into a fresh repository per run,
timed in process, with three blob stores: local files as shipped (temp file, fsync,
rename, fsync of the directory), local files with those fsyncs taken out (an experiment:
a crash could then leave partial blobs, which the product never allows), and memory.
Then restores the local backup to /dev/null and to a file (fsynced, as always). Prints wall
and CPU seconds, throughput, and the share of the single-pass pipeline limit that
`bench.repo` and `csbs bench` print for this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from csbs.blobstore import LocalStore
from csbs.blobstore import local as local_store
from csbs.blobstore.base import BlobStore
from csbs.blobstore.memory import MemoryStore
from csbs.cli.bench import generate_image, parse_size, primitive_limits
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.repository import Repository, RepositorySettings, memtune, schema

KEY = bytes(range(32))


@contextlib.contextmanager
def _no_fsync() -> Iterator[None]:
    with (
        mock.patch.object(local_store.os, "fsync", lambda fd: None),
        mock.patch.object(local_store, "_fsync_dir", lambda path: None),
    ):
        yield


def _repository(where: Path, store: BlobStore) -> Repository:
    engine = create_engine(f"sqlite:///{where / 'index.db'}")
    schema.metadata.create_all(engine)
    return Repository(engine, store, SystemClock(), KEY, RepositorySettings())


def _timed(what: Callable[[], object]) -> tuple[float, float]:
    subprocess.run(["sync"], check=True)
    wall, cpu = time.monotonic(), time.process_time()
    what()
    return time.monotonic() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    memtune.tune_malloc()  # as every process that runs the pipelines does at start
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="csbs-pipeline-", dir=args.work_dir))
    try:
        image = work / "image"
        generate_image(image, size)
        limits = primitive_limits(image, size)
        limit = limits["pipeline"]
        print(f"image {size / 1e6:,.0f} MB; pipeline limit on this machine {limit / 1e6:,.0f} MB/s")

        def row(label: str, wall: float, cpu: float) -> None:
            rate = size / wall
            print(
                f"  {label:<42} {wall:5.2f} s wall {cpu:5.2f} s CPU "
                f"{rate / 1e6:7,.0f} MB/s {rate / limit:4.0%} of the limit"
            )

        def local(d: Path) -> BlobStore:
            return LocalStore(d / "blobs")

        stores: list[tuple[str, Callable[[Path], BlobStore], Callable[[], Any]]] = [
            ("first backup, local files", local, contextlib.nullcontext),
            ("first backup, local files without fsync", local, _no_fsync),
            ("first backup, memory", lambda d: MemoryStore(), contextlib.nullcontext),
        ]
        kept: Repository | None = None
        for label, make_store, context in stores:
            for run in range(args.runs):
                where = work / f"repo-{len(label)}-{run}"
                shutil.rmtree(where, ignore_errors=True)
                where.mkdir()
                repo = _repository(where, make_store(where))
                with context():
                    wall, cpu = _timed(
                        lambda repo=repo: (
                            repo.backup_writer("bench", "b1").write_disk("disk", image),
                            repo.seal_backup("bench", "b1"),
                        )
                    )
                row(label, wall, cpu)
                if kept is None:
                    kept = repo
        assert kept is not None
        target = work / "restored.img"
        for _ in range(args.runs):
            with open(os.devnull, "wb") as sink:
                wall, cpu = _timed(lambda sink=sink: kept.restore("bench", "b1", "disk", sink))
            row("restore to /dev/null", wall, cpu)
            target.unlink(missing_ok=True)
            wall, cpu = _timed(lambda: kept.restore("bench", "b1", "disk", target))
            row("restore to a file (fsynced)", wall, cpu)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
