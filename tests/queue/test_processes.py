"""Real worker processes (the production worker loop) against one database.

Admission across processes, fairness, kill -9, SIGTERM and a database outage.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from csbs import migrations
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.domain.paging import PageRequest, SortKey
from csbs.queue import EnqueueRequest, QueueConfig, TaskFilter, TaskStatus, TaskStore
from tests.support.probe_handler import max_concurrency, read_log
from tests.support.processes import clean_env
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


class Workers:
    def __init__(self, db_url: str, log_dir: Path) -> None:
        self.db_url = db_url
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        n: int = 1,
        *,
        concurrency: int = 4,
        lease: float = 2.0,
        grace: float = 5.0,
        idle_poll: float = 1.0,
    ) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(n):
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.queue_worker",
                    self.db_url,
                    str(self.log_dir),
                    "--concurrency",
                    str(concurrency),
                    "--lease",
                    str(lease),
                    "--grace",
                    str(grace),
                    "--idle-poll",
                    str(idle_poll),
                ],
                stdout=subprocess.PIPE,
                env=clean_env(),
            )
            assert p.stdout is not None
            assert p.stdout.readline().startswith(b"ready"), "worker did not start"
            started.append(p)
        self.procs += started
        return started

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def store(db_url: str) -> Iterator[TaskStore]:
    engine = create_engine(db_url)
    migrations.upgrade(engine)
    # The same limits the worker processes use (settings defaults: delete 5, backup 10).
    yield TaskStore(
        engine, SystemClock(), QueueConfig(limits={"delete": 5, "backup": 10}, max_attempts=5)
    )
    engine.dispose()


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(db_url, tmp_path / "log")
    (tmp_path / "log").mkdir()
    yield w
    w.stop_all()


def wait_all(store: TaskStore, ids: list[str], timeout: float = 120) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [store.get(i) for i in ids]
        if all(t is not None and t.status.terminal for t in got):
            return got
        time.sleep(0.1)
    states = {t.status.value for t in (store.get(i) for i in ids) if t}
    raise AssertionError(f"tasks not terminal in time: {states}")


def test_admission_across_processes(store: TaskStore, workers: Workers) -> None:
    with store.engine.begin() as conn:
        ids = [
            store.enqueue(conn, EnqueueRequest("A", "delete", {"sleep": 0.15})).id
            for _ in range(50)
        ]
    workers.start(3, concurrency=4)
    tasks = wait_all(store, ids)
    assert {t.status for t in tasks} == {TaskStatus.SUCCESS}
    lines = read_log(workers.log_dir)
    assert not [w for w in lines if w[0] == "overlap"]
    peak = max_concurrency(lines, "A")
    assert peak <= 5, f"{peak} deletions of one project ran at once"
    assert peak >= 3, "the workers hardly ran anything in parallel"
    # FIFO: tasks started in the order they were accepted.
    by_start = sorted(tasks, key=lambda t: (t.started_at, t.seq))
    assert [t.seq for t in by_start] == sorted(t.seq for t in tasks)
    assert {t.attempts for t in tasks} == {1}


def test_fairness_across_processes(store: TaskStore, workers: Workers) -> None:
    # Backups: limit 10 per project, more than the 8 slots, so project A alone fills them.
    with store.engine.begin() as conn:
        a_ids = [
            store.enqueue(conn, EnqueueRequest("A", "backup", {"sleep": 0.3})).id
            for _ in range(200)
        ]
    workers.start(2, concurrency=4)
    time.sleep(1.0)
    b = store.enqueue_one(EnqueueRequest("B", "backup", {"sleep": 0.05}))
    # B is visible to claims from its commit on, not from its created_at (read before the
    # insert): a claim batch already running may take several of A's tasks in between.
    visible = SystemClock().now()
    (b_done,) = wait_all(store, [b.id], timeout=30)
    assert b_done.status is TaskStatus.SUCCESS
    started = store.search(
        TaskFilter(project_id="A"), PageRequest(limit=1000, sort=(SortKey("started_at", False),))
    ).items
    overtook = [t for t in started if t.started_at and visible < t.started_at < b_done.started_at]
    # At most one claim in flight per process (its statement ran before B's commit, its
    # start time was read after) may start before B.
    assert len(overtook) <= 2, f"{len(overtook)} of A's tasks started before B's"
    workers.stop_all()
    assert len(a_ids) == 200


def test_an_idle_worker_in_another_process_is_woken_by_an_enqueue(
    store: TaskStore, workers: Workers
) -> None:
    """A task enqueued by this process starts in an idle worker of another process at once:
    on PostgreSQL through NOTIFY, on SQLite through the wake-up socket beside the database.
    The worker's idle poll is 30 s here, so a start within 5 s was woken, not polled."""
    workers.start(1, concurrency=2, idle_poll=30.0)
    for round_ in range(3):
        time.sleep(1.0)  # the worker found nothing to claim and waits
        task = store.enqueue_one(EnqueueRequest(f"p{round_}", "delete", {}))
        (done,) = wait_all(store, [task.id], timeout=60)
        assert done.status is TaskStatus.SUCCESS
        assert done.started_at is not None
        waited = (done.started_at - done.created_at).total_seconds()
        assert waited < 5.0, f"the task started {waited:.1f} s after its enqueue"


def test_kill_9_mid_task_is_finished_by_another_worker(store: TaskStore, workers: Workers) -> None:
    t = store.enqueue_one(EnqueueRequest("A", "delete", {"sleep_first": 60}))
    (victim,) = workers.start(1, concurrency=2, lease=1.0)
    deadline = time.monotonic() + 20
    while store.get(t.id).status is not TaskStatus.RUNNING:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    victim.kill()
    victim.wait()
    workers.start(1, concurrency=2, lease=1.0)
    (done,) = wait_all(store, [t.id], timeout=60)
    assert done.status is TaskStatus.SUCCESS
    assert done.attempts == 2
    assert done.extra_info["attempt"] == 2
    enters = [w for w in read_log(workers.log_dir) if w[0] == "enter" and w[1] == t.id]
    assert [w[2] for w in enters] == ["1", "2"], "the handler did not see attempt 2"
    exits = [w for w in read_log(workers.log_dir) if w[0] == "exit" and w[1] == t.id]
    assert len(exits) == 1  # the killed run never finished
    assert store.count(TaskFilter(status=TaskStatus.SUCCESS)) == 1


def test_sigterm_finishes_or_hands_back(store: TaskStore, workers: Workers) -> None:
    short = [
        store.enqueue_one(EnqueueRequest(f"p{i}", "delete", {"sleep": 0.5})).id for i in range(2)
    ]
    long = [
        store.enqueue_one(EnqueueRequest(f"q{i}", "delete", {"sleep": 60})).id for i in range(2)
    ]
    (proc,) = workers.start(1, concurrency=4, grace=2.0)
    deadline = time.monotonic() + 20
    while store.count(TaskFilter(status=TaskStatus.RUNNING)) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert {store.get(i).status for i in short} == {TaskStatus.SUCCESS}  # type: ignore[union-attr]
    for i in long:
        t = store.get(i)
        assert t is not None and t.status is TaskStatus.WAITING and t.lease_owner is None
    assert store.count(TaskFilter(status=TaskStatus.RUNNING)) == 0
    # Another worker picks the handed-back tasks up.
    for i in long:
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE tasks SET params = :p WHERE id = :i"), {"p": '{"sleep": 0}', "i": i}
            )
    workers.start(1)
    assert {t.status for t in wait_all(store, long, timeout=30)} == {TaskStatus.SUCCESS}


def test_database_outage_loses_and_repeats_nothing(pg_url: str, tmp_path: Path) -> None:
    url = sa.make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.restore()
    via = urllib.parse.unquote(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )
    engine = create_engine(pg_url)
    migrations.upgrade(engine)
    store = TaskStore(engine, SystemClock(), QueueConfig(limits={"delete": 5}))
    log = tmp_path / "log"
    log.mkdir()
    w = Workers(via, log)
    try:
        with engine.begin() as conn:
            ids = [
                store.enqueue(conn, EnqueueRequest(f"p{i % 4}", "delete", {"sleep": 0.2})).id
                for i in range(60)
            ]
        w.start(3, concurrency=4, lease=15.0)
        deadline = time.monotonic() + 30
        while store.count(TaskFilter(status=TaskStatus.SUCCESS)) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proxy.cut()  # every connection of the workers drops; new ones are refused
        time.sleep(3.0)
        proxy.restore()
        tasks = wait_all(store, ids, timeout=120)
    finally:
        w.stop_all()
        proxy.cut()
        engine.dispose()
    assert {t.status for t in tasks} == {TaskStatus.SUCCESS}
    enters: dict[str, int] = {}
    for words in read_log(log):
        assert words[0] != "overlap"
        if words[0] == "enter":
            enters[words[1]] = enters.get(words[1], 0) + 1
    assert set(enters) == set(ids)
    assert set(enters.values()) == {1}, "a task ran twice"
    assert all(t.attempts == 1 for t in tasks)
