"""Child processes of the crash and memory tests: `python -m tests.repository.child CMD ...`.

delete DB_URL STORE_ROOT PROJECT BACKUP   delete a backup, printing a line per batch
backup DB_URL STORE_ROOT IMAGE            back up IMAGE, then print the peak RSS in KiB
sweep DB_URL STORE_ROOT PROJECT           sweep (grace 0), printing a line per blob deleted
"""

from __future__ import annotations

import resource
import sys
import time

from csbs.blobstore import LocalStore
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.repository import Repository, RepositorySettings, memtune, schema
from csbs.repository.reclaim import DeleteProgress

MASTER_KEY = bytes(range(32))


def main(argv: list[str]) -> None:
    command, db_url, root = argv[:3]
    memtune.tune_malloc()  # as every process that runs the pipelines does at start
    engine = create_engine(db_url)
    if command == "delete":
        project, backup = argv[3:5]
        # One reference batch per step, so the kills land between many steps.
        settings = RepositorySettings(release_refs=1)
        repo = Repository(engine, LocalStore(root), SystemClock(), MASTER_KEY, settings)

        def progress(step: DeleteProgress) -> None:
            print(f"released {step.released} of {step.total}", flush=True)
            time.sleep(0.01)  # let the parent's kill land at varying points

        repo.delete_backup(project, backup, progress)
        print("done", flush=True)
    elif command == "sweep":
        (project,) = argv[3:4]

        class _Announcing(LocalStore):
            def delete(self, name: str) -> None:
                super().delete(name)
                print(f"deleted {name}", flush=True)
                time.sleep(0.01)  # let the parent's kill land at varying points

        repo = Repository(
            engine,
            _Announcing(root),
            SystemClock(),
            MASTER_KEY,
            RepositorySettings(sweep_grace_seconds=0),
        )
        result = repo.sweep(project)
        print(f"done {result.chunks}", flush=True)
    elif command == "backup":
        image = argv[3]
        schema.metadata.create_all(engine)
        repo = Repository(
            engine, LocalStore(root), SystemClock(), MASTER_KEY, RepositorySettings(threads=2)
        )
        result = repo.backup_writer("p1", "b1").write_disk("vda", image)
        # ru_maxrss of an exec'd child starts from its parent's RSS at fork (Linux keeps
        # the larger of the two), so it reflects pytest's size; VmHWM is this program's own
        # peak. Print both: the test asserts on the own peak, the shell test on both.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            f"{_own_peak_kib()} {peak} {result.progress.read_bytes} {result.progress.new_bytes}",
            flush=True,
        )
    else:
        raise SystemExit(f"unknown command {command}")


def _own_peak_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    main(sys.argv[1:])
