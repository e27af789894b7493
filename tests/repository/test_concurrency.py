"""Deletion and sweep racing with writers that dedup against the same chunks lose nothing."""

from __future__ import annotations

import io
import pathlib
import random
import threading

import pytest

from csbs.blobstore import BlobStore
from csbs.repository import Repository
from tests.repository.conftest import SMALL_CHUNK, RepoFactory

_BLOCKS = [random.Random(100 + i).randbytes(SMALL_CHUNK) for i in range(12)]
WRITERS = 3
BACKUPS_PER_WRITER = 30


@pytest.mark.slow
def test_delete_and_sweep_race_with_deduplicating_writers(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    # Grace zero: the sweep removes a chunk the moment it reaches zero, the harshest case.
    repo: Repository = make_repo(local_store, sweep_grace_seconds=0.0, batch_chunks=2)
    project = "p1"
    repo.open_project(project)
    live: dict[str, bytes] = {}
    deletable: list[str] = []
    lock = threading.Lock()
    writers_done = threading.Event()
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        rng = random.Random(n)
        image = tmp_path / f"w{n}.img"
        try:
            for round_ in range(BACKUPS_PER_WRITER):
                # Few distinct blocks: every backup shares chunks with the others, and
                # chunks come and go to zero all the time.
                data = b"".join(rng.choice(_BLOCKS) for _ in range(rng.randint(1, 10)))
                image.write_bytes(data)
                backup_id = f"w{n}-{round_}"
                repo.backup_writer(project, backup_id).write_disk("vda", image)
                repo.seal_backup(project, backup_id)
                with lock:
                    live[backup_id] = data
                    deletable.append(backup_id)
        except BaseException as exc:
            failures.append(exc)

    def deleter() -> None:
        # Deletes random sealed backups, keeping the newest few alive to restore at the end.
        rng = random.Random(7)
        try:
            while True:
                with lock:
                    victim = (
                        deletable.pop(rng.randrange(len(deletable))) if len(deletable) > 4 else None
                    )
                    if victim is not None:
                        live.pop(victim)
                if victim is None:
                    if writers_done.is_set():
                        return
                    writers_done.wait(0.005)
                    continue
                repo.delete_backup(project, victim)
        except BaseException as exc:
            failures.append(exc)

    def sweeper() -> None:
        try:
            while not writers_done.is_set():
                repo.sweep(project)
        except BaseException as exc:
            failures.append(exc)

    def verifier() -> None:
        # Restores run concurrently too: every backup known to be live restores exactly.
        try:
            while not writers_done.is_set():
                with lock:
                    items = list(live.items())[:3]
                for backup_id, data in items:
                    out = io.BytesIO()
                    try:
                        repo.restore(project, backup_id, "vda", out)
                    except Exception:
                        with lock:
                            if backup_id not in live:
                                continue  # deleted meanwhile: a legitimate failure
                        raise
                    assert out.getvalue() == data
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    helpers = [threading.Thread(target=f) for f in (deleter, sweeper, verifier)]
    for t in threads + helpers:
        t.start()
    for t in threads:
        t.join()
    writers_done.set()
    for t in helpers:
        t.join()
    assert not failures, failures
    repo.sweep(project)
    report = repo.check(project, read_data=True)
    assert report.ok, report
    for backup_id, data in live.items():
        out = io.BytesIO()
        repo.restore(project, backup_id, "vda", out)
        assert out.getvalue() == data
