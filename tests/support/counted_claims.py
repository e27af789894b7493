"""`csbs` as a process runs it, counting its task claims: one line per claim in a file.

python -m tests.support.counted_claims COUNT_FILE worker --host h1 ...

The command is the real one (`csbs.cli.main.main`); only `TaskLifecycle.claim_many` is
wrapped, so a test of separate processes can tell how often each worker looked for work
(a worker claims at its start, when woken, at its idle poll and when a task ends).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from csbs.cli.main import main
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
    sys.argv = ["csbs", *sys.argv[2:]]
    main()
