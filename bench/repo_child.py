"""One csbs operation of `bench.repo` in a fresh interpreter, timed inside it.

    python -m bench.repo_child backup DB_URL STORE_DIR IMAGE BACKUP_ID [PREVIOUS]
    python -m bench.repo_child restore DB_URL STORE_DIR BACKUP_ID TARGET
    python -m bench.repo_child delete DB_URL STORE_DIR BACKUP_ID

Prints the seconds the operation took. It imports the repository and nothing of the
service (no HTTP stack), as a worker running a backup does not pay for more; the
interpreter's start-up and imports are not timed, as a long-running worker has them behind
it.
"""

from __future__ import annotations

import sys
import time

from csbs.blobstore import LocalStore
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.repository import Repository, RepositorySettings, memtune, schema

_KEY = bytes(range(32))


def main(argv: list[str]) -> float:
    op, db_url, store_dir, *rest = argv
    memtune.tune_malloc()  # as every process that runs the pipelines does at start
    engine = create_engine(db_url)
    try:
        schema.metadata.create_all(engine)
        settings = RepositorySettings(sweep_grace_seconds=0.0)
        repo = Repository(engine, LocalStore(store_dir), SystemClock(), _KEY, settings)
        started = time.monotonic()
        if op == "backup":
            image, backup_id, *previous = rest
            # Over the previous backup, as the backup task does: sub-chunk increments.
            repo.backup_writer("bench", backup_id).write_disk(
                "disk", image, previous=previous[0] if previous else None
            )
            repo.seal_backup("bench", backup_id)
        elif op == "restore":
            backup_id, target = rest
            repo.restore("bench", backup_id, "disk", target)
        elif op == "delete":
            (backup_id,) = rest
            repo.delete_backup("bench", backup_id)
            repo.sweep("bench")
        else:
            raise SystemExit(f"unknown operation {op!r}")
        return time.monotonic() - started
    finally:
        engine.dispose()


if __name__ == "__main__":
    print(main(sys.argv[1:]))
