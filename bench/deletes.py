"""Deletion benchmark: many DELETE calls against a running `csbs serve` on PostgreSQL.

    python -m bench.deletes [--backups 1000] [--projects 10] [--clients 20] [--rate R]
                            [--separate-worker [--worker-nice N]] [--client-processes N]

Starts `csbs serve` (embedded workers, PostgreSQL in a fresh schema, loopback only), makes
the backups (one tiny disk per server), then sends one DELETE per backup record from
`--clients` concurrent clients and reports: DELETE latency p50/p99, the time until every
deletion task is terminal, the most deletions ever running at once in one project (sampled
from the database, and from the tasks' start/end records), and lost or repeated tasks.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx2
import sqlalchemy as sa

from csbs import app as composition
from csbs.config import Settings
from csbs.domain.identity import Role
from csbs.queue.schema import tasks
from csbs.services.backups import ProtectRequest
from csbs.services.inventory import DiskSpec

PG = "postgresql://postgres@127.0.0.1:5432/test"
PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


def _client_share(
    base: str,
    jobs: list[tuple[float | None, str, str]],
    tokens: dict[str, str],
    clients: int,
    start: float,
) -> tuple[list[float], dict[int, int]]:
    """One client process: `clients` clients in threads send `jobs`; latencies and codes.

    A job is (send at, project, record): `send at` is seconds after the wall-clock `start`,
    or None to send as soon as the client's previous call is answered. A paced call's
    latency counts from when it was due, so a client held up by a slow answer does not hide
    the wait it caused.

    Each client keeps one HTTP/1.1 connection open (keep-alive), as an SDK would. The
    standard library's client is used because it costs a fraction of the CPU of a full-featured
    one: on a small machine the load generator shares the cores with the service it measures.
    """
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    codes: dict[int, int] = defaultdict(int)

    def connect(mine: list[tuple[float | None, str, str]]) -> http.client.HTTPConnection:
        """Open the client's connection and make two authenticated calls, before the clock:
        a list, and a DELETE of a record that does not exist (answered 404). The DELETE
        runs the same statement as the measured ones, so the service has compiled it and
        PostgreSQL has planned it on the pooled connections, as in a service that has
        been up for more than its first second."""
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        pid = mine[0][1]
        headers = {"X-Auth-Token": tokens[pid]}
        conn.request("GET", f"/v1/{pid}/checkpoint_items?limit=1", headers=headers)
        conn.getresponse().read()
        conn.request(
            "DELETE", f"/v1/{pid}/providers/{PROVIDER}/checkpoints/{uuid.uuid4()}", headers=headers
        )
        r = conn.getresponse()
        r.read()
        assert r.status == 404, r.status
        return conn

    def client(mine: list[tuple[float | None, str, str]], conn: http.client.HTTPConnection) -> None:
        for due, pid, cp in mine:
            if due is not None:
                time.sleep(max(0.0, start + due - time.time()))
                t0 = time.perf_counter() - max(0.0, time.time() - (start + due))
            else:
                t0 = time.perf_counter()
            conn.request(
                "DELETE",
                f"/v1/{pid}/providers/{PROVIDER}/checkpoints/{cp}",
                headers={"X-Auth-Token": tokens[pid]},
            )
            r = conn.getresponse()
            r.read()
            latencies.append((time.perf_counter() - t0) * 1000)
            codes[r.status] += 1
        conn.close()

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        mine = [jobs[i::clients] for i in range(clients)]
        conns = list(pool.map(connect, mine))
        time.sleep(max(0.0, start - time.time()))
        list(pool.map(client, mine, conns))
    return latencies, dict(codes)


def _processes() -> dict[int, tuple[str, list[str]]]:
    """pid -> (command name, the fields of /proc/PID/stat after it) for every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, _, rest = stat.partition("(")[2].rpartition(")")
            found[int(entry.name)] = (name, rest.split())
    return found


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each of these processes."""
    tick = os.sysconf("SC_CLK_TCK")
    return {
        pid: (int(fields[11]) + int(fields[12])) / tick
        for pid, (_, fields) in _processes().items()
        if pid in pids
    }


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings (processes that ended in between are lost)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def _machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine has spent busy, and those the hypervisor took from it
    (steal), all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait; steal (values[7]) is not ours either
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values[:7]) - idle) / tick, values[7] / tick


def _children(parent: int) -> list[int]:
    """Processes whose parent is `parent` (the worker process `csbs serve` starts)."""
    return [pid for pid, (_, fields) in _processes().items() if int(fields[1]) == parent]


def _postgres_pids() -> list[int]:
    return [pid for pid, (name, _) in _processes().items() if name in ("postgres", "postmaster")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backups", type=int, default=1000)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="DELETE calls per second offered by all clients together, evenly spaced "
        "(0: each client sends its next call as soon as the previous one is answered)",
    )
    parser.add_argument("--port", type=int, default=8911)
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="with --separate-worker: run the worker under `nice -n N`",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=4,
        help="processes the clients are spread over (1: all in the benchmark's process)",
    )
    parser.add_argument(
        "--api-threads", type=int, default=0, help="the service's api_threads (0: its default)"
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=8,
        help="task slots of the workers (the service's default is 4)",
    )
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="run `csbs serve` without embedded workers and one `csbs worker` process beside it",
    )
    args = parser.parse_args()

    schema = f"bench_del_{uuid.uuid4().hex[:8]}"
    admin_engine = sa.create_engine(
        PG.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin_engine.connect() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG}?options=-csearch_path%3D{schema}"
    data = Path(tempfile.mkdtemp())
    settings = Settings(
        data_dir=data, database_url=url, admin_password="bench-admin-pw", embedded_workers=False
    )  # type: ignore[arg-type]
    runtime = composition.build(settings)
    composition.prepare(runtime)
    s = runtime.services
    (data / "disks").mkdir(exist_ok=True)
    per_project = args.backups // args.projects
    projects: list[tuple[str, str, list[str]]] = []  # (project id, user password, checkpoint ids)
    print(f"making {per_project * args.projects} backups ...", flush=True)
    for p in range(args.projects):
        project = s.identity.create_project(f"bench{p}")
        s.identity.create_user(f"user{p}", "bench-user-pw", project.name, Role.MEMBER)
        checkpoints = []
        for i in range(per_project):
            disk = data / "disks" / f"p{p}-{i}.img"
            disk.write_bytes(os.urandom(16 * 1024) + bytes(48 * 1024))
            server = s.inventory.add_server(project.id, f"srv{i}", [DiskSpec(str(disk))])
            cp, _ = s.backups.protect(project.id, ProtectRequest(server.id))
            checkpoints.append(cp.id)
        projects.append((project.id, f"user{p}", checkpoints))

    log = open(data / "serve.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSBS_")}
    env.update(CSBS_LOG_LEVEL="WARNING", CSBS_WORKER_CONCURRENCY=str(args.worker_concurrency))
    if args.api_threads:
        env["CSBS_API_THREADS"] = str(args.api_threads)
    worker = None
    if args.separate_worker:
        env["CSBS_EMBEDDED_WORKERS"] = "false"
        worker = subprocess.Popen(
            [
                *(["nice", "-n", str(args.worker_nice)] if args.worker_nice else []),
                sys.executable,
                "-m",
                "csbs",
                "worker",
                "--data-dir",
                str(data),
                "--database-url",
                url,
                "--concurrency",
                str(args.worker_concurrency),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "csbs",
            "serve",
            "--data-dir",
            str(data),
            "--database-url",
            url,
            "--port",
            str(args.port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(300):
            try:
                if httpx2.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        engine = runtime.services.db.engine
        while True:  # the embedded workers make the backups
            with engine.connect() as c:
                left = c.execute(
                    sa.text("SELECT count(*) FROM backups WHERE status <> 'available'")
                ).scalar_one()
            if left == 0:
                break
            time.sleep(0.5)
        tokens = {}
        for pid, user, _ in projects:
            r = httpx2.post(
                f"{base}/v3/auth/tokens",
                json={
                    "auth": {
                        "identity": {
                            "methods": ["password"],
                            "password": {"user": {"name": user, "password": "bench-user-pw"}},
                        },
                        "scope": {"project": {"id": pid}},
                    }
                },
            )
            tokens[pid] = r.headers["X-Subject-Token"]
        jobs = [
            (pid, cp)
            for i in range(per_project)
            for pid, _, cps in projects
            for cp in cps[i : i + 1]
        ]

        peak_seen = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_seen
            q = sa.text(
                "SELECT count(*) FROM tasks WHERE status = 'running' "
                "AND operation_type = 'delete' GROUP BY project_id"
            )
            while not stop.is_set():
                with engine.connect() as c:
                    peak_seen = max([peak_seen, *c.execute(q).scalars().all()])
                stop.wait(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # The clients run in several processes (threads within each): one Python process
        # driving 20 clients queues them on its own interpreter lock, and that wait would be
        # counted as DELETE latency. The processes are started before the clock starts.
        procs = max(1, min(args.client_processes, args.clients))
        paced = [
            (k / args.rate if args.rate > 0 else None, pid, cp) for k, (pid, cp) in enumerate(jobs)
        ]
        # Job k goes to client k % clients, and client c lives in process c % procs.
        shares = [
            [job for k, job in enumerate(paced) if (k % args.clients) % procs == p]
            for p in range(procs)
        ]
        threads = [len(range(k, args.clients, procs)) for k in range(procs)]
        latencies: list[float] = []
        codes: dict[int, int] = defaultdict(int)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as clients:
            list(clients.map(time.sleep, [0.5] * procs))  # all client processes up
            client_pids = list(clients._processes)
            worker_pids = [serve.pid, *_children(serve.pid)]
            if worker is not None:
                worker_pids.append(worker.pid)
            start_at = time.time() + 1.0  # the clients connect and warm up before
            answers = clients.map(
                _client_share, [base] * procs, shares, [tokens] * procs, threads, [start_at] * procs
            )
            time.sleep(max(0.0, start_at - time.time()))
            started = time.monotonic()
            serve_cpu0 = _cpu_seconds(worker_pids)
            pg_cpu0 = _cpu_seconds(_postgres_pids())
            client_cpu0 = _cpu_seconds(client_pids)
            own_cpu0 = _cpu_seconds([os.getpid()])
            machine_cpu0 = _machine_cpu_seconds()
            for got_latencies, got_codes in answers:
                latencies += got_latencies
                for code, n in got_codes.items():
                    codes[code] += n
            accepted = time.monotonic() - started
            serve_cpu = _cpu_seconds(worker_pids)
            pg_cpu = _cpu_delta(pg_cpu0, _cpu_seconds(_postgres_pids()))
            client_cpu = _cpu_delta(client_cpu0, _cpu_seconds(client_pids))
            own_cpu = _cpu_delta(own_cpu0, _cpu_seconds([os.getpid()]))
            machine_cpu1 = _machine_cpu_seconds()
            machine_cpu = machine_cpu1[0] - machine_cpu0[0]
            steal = (machine_cpu1[1] - machine_cpu0[1]) / (accepted * (os.cpu_count() or 1))
        serve_only = serve_cpu[serve.pid] - serve_cpu0[serve.pid]
        worker_only = _cpu_delta(serve_cpu0, serve_cpu) - serve_only
        while True:
            with engine.connect() as c:
                open_ = c.execute(
                    sa.select(sa.func.count())
                    .select_from(tasks)
                    .where(
                        tasks.c.operation_type == "delete",
                        tasks.c.status.in_(["waiting", "running"]),
                    )
                ).scalar_one()
            if open_ == 0:
                break
            time.sleep(0.2)
        finished = time.monotonic() - started
        # From the first DELETE until every deletion is terminal: what the deletions cost.
        total_serve = _cpu_seconds(worker_pids)
        total_worker = _cpu_delta(serve_cpu0, total_serve) - (
            total_serve[serve.pid] - serve_cpu0[serve.pid]
        )
        total_pg = _cpu_delta(pg_cpu0, _cpu_seconds(_postgres_pids()))
        stop.set()
        sampler.join()
        with engine.connect() as c:
            rows = c.execute(
                sa.select(
                    tasks.c.project_id,
                    tasks.c.status,
                    tasks.c.attempts,
                    tasks.c.started_at,
                    tasks.c.ended_at,
                ).where(tasks.c.operation_type == "delete")
            ).all()
            left_backups = c.execute(sa.text("SELECT count(*) FROM backups")).scalar_one()
        per_project_intervals: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for r in rows:
            per_project_intervals[r.project_id] += [
                (r.started_at.timestamp(), 1),
                (r.ended_at.timestamp(), -1),
            ]
        peak_records = 0
        for events in per_project_intervals.values():
            cur = 0
            for _, d in sorted(events):
                cur += d
                peak_records = max(peak_records, cur)
        ordered = sorted(latencies)
        print()
        topology = "separate worker process" if args.separate_worker else "embedded workers"
        load = (
            f"offered at {args.rate:g}/s"
            if args.rate > 0
            else "each client sending on as soon as answered"
        )
        print(
            f"deletions: {len(jobs)} DELETE calls, {args.clients} clients ({load}), "
            f"{args.projects} projects, PostgreSQL, limit 5 per project, {topology}, "
            f"{args.worker_concurrency} worker slots"
        )
        print(f"  HTTP status codes          {dict(codes)}")
        print(
            f"  DELETE latency p50 / p99   {statistics.median(ordered):.1f} ms / "
            f"{ordered[int(0.99 * (len(ordered) - 1))]:.1f} ms"
        )
        print(f"  all DELETEs answered in    {accepted:.1f} s")
        print(f"  all deletions terminal in  {finished:.1f} s")
        per = 1000 / len(jobs)
        print(
            f"  CPU per DELETE call, while answering ({os.cpu_count()} cores): "
            f"csbs serve {serve_only * per:.1f} ms"
            + f", csbs worker {worker_only * per:.1f} ms"
            + f", PostgreSQL {pg_cpu * per:.1f} ms, clients {client_cpu * per:.1f} ms, "
            f"this benchmark's sampler {own_cpu * per:.1f} ms, "
            f"whole machine {machine_cpu * per:.1f} ms; "
            f"taken by the hypervisor (steal) {steal:.0%} of the cores' time"
        )
        print(
            f"  CPU per deletion, from the first DELETE until all are terminal: "
            f"csbs worker {total_worker * per:.1f} ms, PostgreSQL {total_pg * per:.1f} ms "
            "(the DELETE calls' and this benchmark's sampler's share included)"
        )
        print(
            f"  tasks: {len(rows)} ({sum(1 for r in rows if r.status == 'success')} success), "
            f"run more than once: {sum(1 for r in rows if r.attempts > 1)}"
        )
        print(f"  backups left               {left_backups}")
        print(
            f"  max running per project    {peak_seen} (sampled every 10 ms), "
            f"{peak_records} (task records)"
        )
    finally:
        serve.terminate()
        serve.wait(timeout=60)
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        runtime.close()
        with admin_engine.connect() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
