"""A worker process for engine tests: the production worker loop with the probe handler.

python -m tests.support.queue_worker DB_URL LOG_DIR [--concurrency N] [--lease S] [--grace S]
                                    [--idle-poll S]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from csbs import app as composition
from csbs import logs
from csbs.app.run import run_worker
from csbs.config import Settings
from tests.support.probe_handler import ProbeHandler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--host", default=None)
    parser.add_argument("--idle-poll", type=float, default=1.0)
    args = parser.parse_args()
    logs.configure("WARNING")
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp()),
        database_url=args.db_url,
        task_lease_seconds=args.lease,
        shutdown_grace_seconds=args.grace,
        task_max_attempts=5,
        worker_idle_poll_seconds=args.idle_poll,
    )
    runtime = composition.build(settings)
    probe = ProbeHandler(args.log_dir)
    worker = composition.make_worker(
        runtime,
        concurrency=args.concurrency,
        host=args.host,
        handlers={"delete": probe, "backup": probe},
    )
    print(f"ready {worker.worker_id}", flush=True)
    run_worker(runtime, worker)
    sys.exit(0)


if __name__ == "__main__":
    main()
