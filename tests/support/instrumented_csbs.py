"""`csbs` as a process runs it, counting its task claims, and pruning sooner if asked.

python -m tests.support.instrumented_csbs COUNT_FILE worker --host h1 ...

The command is the real one (`csbs.cli.main.main`). Two things are changed for a test of
separate processes:

- `TaskLifecycle.claim_many` is wrapped to append a line per claim to COUNT_FILE, so the
  test can tell how often each worker looked for work (a worker claims at its start, when
  woken, at its idle poll and when one of its tasks ends);
- with `CSBS_TEST_PRUNE_INTERVAL_SECONDS` set, workers prune ended tasks that often
  instead of every ten minutes (`queue.worker.PRUNE_INTERVAL_SECONDS`).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from csbs.cli.main import main
from csbs.queue import worker
from csbs.queue.lifecycle import TaskLifecycle


def _count_into(path: str) -> None:
    claim_many = TaskLifecycle.claim_many
    lock = threading.Lock()

    def counted(
        self: TaskLifecycle, worker_id: str, host: str | None, *args: Any, **kw: Any
    ) -> Any:
        with lock, open(path, "a") as out:
            out.write(f"{host}\n")
        return claim_many(self, worker_id, host, *args, **kw)

    TaskLifecycle.claim_many = counted  # type: ignore[method-assign]


if __name__ == "__main__":
    _count_into(sys.argv[1])
    prune = os.environ.get("CSBS_TEST_PRUNE_INTERVAL_SECONDS")
    if prune:
        worker.PRUNE_INTERVAL_SECONDS = float(prune)
    sys.argv = ["csbs", *sys.argv[2:]]
    main()
