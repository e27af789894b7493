"""Task engine benchmark: throughput, claim latency and admission under load.

    python -m bench.tasks [--tasks 10000] [--projects 100] [--workers 4] [--concurrency 8]
                          [--engines postgresql,sqlite] [--pg-url URL]

Per engine: enqueue N no-op deletion tasks over P projects (limit 5 running per project),
start W worker processes (the production worker loop), and measure
  - throughput: tasks / second from the first start to the last end;
  - claim latency when a slot is free: with the workers idle, enqueue tasks one at a time and
    measure enqueue -> start (p50 / p99);
  - the most tasks of one project that ever ran at once (from the task records' start and
    end times), against the limit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from csbs import migrations
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.queue import EnqueueRequest, QueueConfig, TaskStatus, TaskStore
from csbs.queue.schema import tasks

LIMIT = 5


def worker_main(url: str, concurrency: int) -> None:
    """One worker process with a no-op deletion handler."""
    from csbs import app as composition
    from csbs import logs
    from csbs.app.run import run_worker
    from csbs.config import Settings
    from csbs.queue.worker import FunctionHandler

    logs.configure("WARNING")
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp()),
        database_url=url,
        delete_concurrency_per_project=LIMIT,
        shutdown_grace_seconds=5,
    )
    runtime = composition.build(settings)
    worker = composition.make_worker(
        runtime, concurrency=concurrency, handlers={"delete": FunctionHandler(lambda ctx: None)}
    )
    run_worker(runtime, worker)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_engine(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_engine(url)
    migrations.upgrade(engine)
    store = TaskStore(engine, SystemClock(), QueueConfig(limits={"delete": LIMIT}))
    with engine.begin() as conn:
        conn.execute(tasks.delete())
    with engine.begin() as conn:
        for i in range(args.tasks):
            store.enqueue(conn, EnqueueRequest(f"bench-{i % args.projects}", "delete"))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.tasks",
                "--worker",
                url,
                "--concurrency",
                str(args.concurrency),
            ]
        )
        for _ in range(args.workers)
    ]
    peak_seen = 0
    stop_sampling = threading.Event()

    def sample() -> None:
        # Consistent snapshots of the running tasks per project, as often as the database
        # answers: a direct observation of the admission limit.
        nonlocal peak_seen
        query = (
            sa.select(sa.func.count())
            .select_from(tasks)
            .where(tasks.c.status == TaskStatus.RUNNING.value)
            .group_by(tasks.c.project_id)
        )
        while not stop_sampling.is_set():
            with engine.connect() as conn:
                counts = conn.execute(query).scalars().all()
            peak_seen = max([peak_seen, *counts])
            stop_sampling.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        t0 = time.monotonic()
        while True:
            with engine.connect() as conn:
                left = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(tasks)
                    .where(tasks.c.status.in_([TaskStatus.WAITING.value, TaskStatus.RUNNING.value]))
                ).scalar_one()
            if left == 0:
                break
            if time.monotonic() - t0 > args.timeout:
                raise SystemExit(f"{name}: {left} tasks still open after {args.timeout} s")
            time.sleep(0.2)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.project_id, tasks.c.status, tasks.c.started_at, tasks.c.ended_at)
            ).all()
        failed = sum(1 for r in rows if r.status != "success")
        first = min(r.started_at for r in rows)
        last = max(r.ended_at for r in rows)
        throughput = len(rows) / (last - first).total_seconds()
        per_project: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            per_project[r.project_id].append((r.started_at.timestamp(), r.ended_at.timestamp()))
        peak = max(max_overlap(v) for v in per_project.values())
        stop_sampling.set()
        sampler.join()

        # Claim latency with free slots: one task at a time, workers idle.
        latencies = []
        for _ in range(args.latency_samples):
            t = store.enqueue_one(EnqueueRequest(f"lat-{uuid.uuid4().hex[:6]}", "delete"))
            while True:
                got = store.get(t.id)
                assert got is not None
                if got.started_at is not None:
                    latencies.append((got.started_at - got.created_at).total_seconds() * 1000)
                    break
                time.sleep(0.002)
            time.sleep(0.02)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        engine.dispose()
    return {
        "engine": name,
        "tasks": len(rows),
        "failed": failed,
        "throughput": throughput,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "peak": peak,
        "peak_seen": peak_seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--engines", default="postgresql,sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.concurrency)
        return
    results = []
    for name in args.engines.split(","):
        if name == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
            results.append(run_engine(name, url, args))
        else:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(
                args.pg_url.replace("postgresql://", "postgresql+psycopg://"),
                isolation_level="AUTOCOMMIT",
            )
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            try:
                results.append(
                    run_engine(name, f"{args.pg_url}?options=-csearch_path%3D{schema}", args)
                )
            finally:
                with admin.connect() as c:
                    c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    print()
    print(
        f"tasks engine: {args.tasks} no-op deletion tasks, {args.projects} projects, "
        f"{args.workers} worker processes x {args.concurrency} slots, limit {LIMIT} per project"
    )
    print(
        f"{'engine':<12}{'tasks/s':>9}{'claim p50 ms':>14}{'claim p99 ms':>14}"
        f"{'max running/project':>21}{'(records)':>11}{'failed':>8}"
    )
    for r in results:
        print(
            f"{r['engine']:<12}{r['throughput']:>9.0f}{r['p50']:>14.1f}{r['p99']:>14.1f}"
            f"{r['peak_seen']:>21}{r['peak']:>11}{r['failed']:>8}"
        )
    print(f"limit: {LIMIT} running per project; 'max running/project' is sampled from the database")
    print("every 20 ms; '(records)' is the overlap of the tasks' recorded start and end times.")


if __name__ == "__main__":
    main()
