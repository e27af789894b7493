"""The worker loop in this process: outcomes, retries, deadlines, shutdown, exclusivity."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc

from csbs import migrations
from csbs.db.engine import create_engine
from csbs.domain import errors
from csbs.domain.clock import SystemClock
from csbs.queue import EnqueueRequest, QueueConfig, TaskContext, TaskStatus, TaskStore, Worker
from csbs.queue.worker import FunctionHandler
from tests.support.probe_handler import ProbeHandler, read_log


@pytest.fixture
def store(db_url: str) -> Iterator[TaskStore]:
    engine = create_engine(db_url)
    migrations.upgrade(engine)
    yield TaskStore(
        engine,
        SystemClock(),
        QueueConfig(
            limits={"delete": 5},
            default_limit=1000,
            lease_seconds=2,
            max_attempts=5,
            retry_base_delay=0.01,
        ),
    )
    engine.dispose()


def wait_terminal(store: TaskStore, ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(store.get(i).status.terminal for i in ids):  # type: ignore[union-attr]
            return
        time.sleep(0.05)
    raise AssertionError("tasks did not finish in time")


def run_worker(store: TaskStore, handlers: Mapping[str, Any], **kw: Any) -> Worker:
    w = Worker(store, handlers, clock=SystemClock(), **kw)
    w.start()
    return w


def test_outcomes(store: TaskStore, tmp_path: Path) -> None:
    probe = ProbeHandler(tmp_path)
    w = run_worker(store, {"delete": probe})
    try:
        ok = store.enqueue_one(EnqueueRequest("p", "delete", {"sleep": 0.6}))
        bad = store.enqueue_one(EnqueueRequest("p", "delete", {"fail": "disk on fire"}))
        retried = store.enqueue_one(EnqueueRequest("p", "delete", {"retry_until": 3}))
        wait_terminal(store, [ok.id, bad.id, retried.id])
    finally:
        w.stop(grace=5)
    done = store.get(ok.id)
    assert done is not None and done.status is TaskStatus.SUCCESS
    assert done.progress == 100 and done.extra_info["attempt"] == 1
    assert done.extra_info["slept"] > 0, "progress reports did not reach extra_info"
    failed = store.get(bad.id)
    assert failed is not None and failed.status is TaskStatus.FAILED
    # The exception's text is for the service's log, not for the task's readers.
    assert failed.error_info is not None and failed.error_info["code"] == "CSBS.9999"
    assert "disk on fire" not in failed.error_info["message"]
    assert f"operation log {bad.id}" in failed.error_info["message"]
    again = store.get(retried.id)
    assert again is not None and again.status is TaskStatus.SUCCESS and again.attempts == 3
    assert [w[2] for w in read_log(tmp_path) if w[0] == "enter" and w[1] == retried.id] == [
        "1",
        "2",
        "3",
    ]


def test_domain_error_code_is_kept(store: TaskStore) -> None:
    def handler(ctx: TaskContext) -> None:
        raise errors.InvalidState("backup is busy", code="CSBS.2003")

    w = run_worker(store, {"delete": FunctionHandler(handler)})
    try:
        t = store.enqueue_one(EnqueueRequest("p", "delete"))
        wait_terminal(store, [t.id])
    finally:
        w.stop()
    assert store.get(t.id).error_info == {"code": "CSBS.2003", "message": "backup is busy"}  # type: ignore[union-attr]


def test_a_lost_database_interrupts_the_task_it_does_not_fail_it(db_url: str) -> None:
    engine = create_engine(db_url)
    migrations.upgrade(engine)
    # One attempt allowed: only interruptions can bring the task to success.
    store = TaskStore(
        engine,
        SystemClock(),
        QueueConfig(lease_seconds=2, max_attempts=1, retry_base_delay=0.01),
    )
    runs: list[int] = []

    def handler(ctx: TaskContext) -> dict[str, Any]:
        runs.append(ctx.attempt)
        if len(runs) == 1:  # as SQLAlchemy raises it when the server closed the connection
            raise sqlalchemy.exc.OperationalError(
                "SELECT 1", {}, Exception("server closed the connection unexpectedly")
            )
        if len(runs) == 2:  # as the database layer translates it, chained
            try:
                raise sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("closed"))
            except sqlalchemy.exc.InterfaceError as e:
                raise RuntimeError("while recording") from e
        return {"done": True}

    w = run_worker(store, {"backup": FunctionHandler(handler)})
    try:
        t = store.enqueue_one(EnqueueRequest("p", "backup"))
        wait_terminal(store, [t.id])
    finally:
        w.stop()
        engine.dispose()
    done = store.get(t.id)
    assert done is not None and done.status is TaskStatus.SUCCESS, done
    assert runs == [1, 2, 3]
    assert (done.attempts, done.interruptions, done.failures) == (3, 2, 1)


def test_deadline_ends_in_timeout(store: TaskStore, tmp_path: Path) -> None:
    w = run_worker(store, {"delete": ProbeHandler(tmp_path)}, deadline_grace=0.3)
    try:
        polite = store.enqueue_one(
            EnqueueRequest("p", "delete", {"sleep": 30}, deadline_seconds=0.5)
        )
        stubborn = store.enqueue_one(
            EnqueueRequest("p", "delete", {"sleep": 3, "hang": True}, deadline_seconds=0.5)
        )
        started = time.monotonic()
        wait_terminal(store, [polite.id, stubborn.id], timeout=10)
        elapsed = time.monotonic() - started
    finally:
        w.stop(grace=5)
    for t in (polite, stubborn):
        got = store.get(t.id)
        assert got is not None and got.status is TaskStatus.TIMEOUT
        assert "did not finish within 0.5 seconds" in got.error_info["message"]  # type: ignore[index]
    assert elapsed < 2.9, "the stubborn handler's timeout waited for the handler"


def test_graceful_stop_finishes_short_and_hands_back_long(store: TaskStore, tmp_path: Path) -> None:
    w = run_worker(store, {"delete": ProbeHandler(tmp_path)})
    short = store.enqueue_one(EnqueueRequest("p", "delete", {"sleep": 0.3}))
    long = store.enqueue_one(EnqueueRequest("p", "delete", {"sleep": 30}))
    deadline = time.monotonic() + 10
    while store.get(long.id).status is not TaskStatus.RUNNING and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.02)
    w.stop(grace=1.0)
    assert store.get(short.id).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    back = store.get(long.id)
    assert back is not None and back.status is TaskStatus.WAITING and back.lease_owner is None


def test_cancel_request(store: TaskStore, tmp_path: Path) -> None:
    w = run_worker(store, {"delete": ProbeHandler(tmp_path)})
    try:
        t = store.enqueue_one(EnqueueRequest("p", "delete", {"sleep": 30}))
        while store.get(t.id).status is not TaskStatus.RUNNING:  # type: ignore[union-attr]
            time.sleep(0.02)
        assert store.request_cancel(t.id)
        wait_terminal(store, [t.id], timeout=10)
    finally:
        w.stop()
    got = store.get(t.id)
    assert got is not None and got.status is TaskStatus.FAILED
    assert got.error_info == {"code": "CSBS.9999", "message": "The task was cancelled."}


def test_no_task_runs_twice_at_once_over_thousands(store: TaskStore) -> None:
    active: set[str] = set()
    runs: dict[str, int] = {}
    overlaps: list[str] = []
    lock = threading.Lock()

    def handler(ctx: TaskContext) -> None:
        with lock:
            if ctx.task.id in active:
                overlaps.append(ctx.task.id)
            active.add(ctx.task.id)
            runs[ctx.task.id] = runs.get(ctx.task.id, 0) + 1
        time.sleep(0.0005)
        with lock:
            active.discard(ctx.task.id)

    n = 2000
    with store.engine.begin() as conn:
        ids = [store.enqueue(conn, EnqueueRequest(f"p{i % 40}", "backup")).id for i in range(n)]
    workers = [
        run_worker(store, {"backup": FunctionHandler(handler)}, concurrency=8) for _ in range(3)
    ]
    try:
        wait_terminal(store, ids[-50:], timeout=240)
        wait_terminal(store, ids, timeout=60)
    finally:
        for w in workers:
            w.stop()
    assert overlaps == []
    assert len(runs) == n and set(runs.values()) == {1}


def _start_times(store: TaskStore, api_busy: Any, interval: float) -> list[float]:
    """Start times (monotonic) of 4 quick tasks enqueued at once, with 4 free slots."""
    started: list[float] = []
    lock = threading.Lock()

    def record(ctx: TaskContext) -> None:
        with lock:
            started.append(time.monotonic())

    w = run_worker(
        store,
        {"delete": FunctionHandler(record)},
        concurrency=4,
        api_busy=api_busy,
        busy_claim_interval=interval,
    )
    try:
        ids = [store.enqueue_one(EnqueueRequest(f"p{i}", "delete", {})).id for i in range(4)]
        wait_terminal(store, ids)
    finally:
        w.stop(grace=5)
    assert all(store.get(i).status is TaskStatus.SUCCESS for i in ids)  # type: ignore[union-attr]
    return sorted(started)


def test_a_busy_api_slows_the_start_of_tasks_but_never_stops_it(store: TaskStore) -> None:
    # While the API answers calls, one task starts per interval; all of them still run.
    busy = _start_times(store, lambda: True, 0.3)
    gaps = [b - a for a, b in itertools.pairwise(busy)]
    assert len(busy) == 4 and min(gaps) >= 0.25, gaps
    # An idle API: the free slots are filled at once.
    idle = _start_times(store, lambda: False, 0.3)
    assert idle[-1] - idle[0] < 0.25, idle
    # Interval 0 turns the deferral off even with a busy API.
    off = _start_times(store, lambda: True, 0)
    assert off[-1] - off[0] < 0.25, off
