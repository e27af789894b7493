"""Workers are known: they register and heartbeat; a task routed to a host with no live
worker says so and fails at its start deadline, unless a worker of that host appears;
ended tasks are pruned after their retention and nothing else is."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from csbs import migrations
from csbs.db.engine import create_engine
from csbs.domain.clock import FrozenClock, SystemClock
from csbs.queue import EnqueueRequest, QueueConfig, Task, TaskStatus, TaskStore, Worker
from csbs.queue.registry import Registration
from csbs.queue.schema import tasks
from csbs.queue.worker import FunctionHandler
from csbs.services.operation_logs import OperationLogService

StoreFactory = Callable[..., TaskStore]


def _me(worker_id: str, host: str) -> Registration:
    return Registration(worker_id=worker_id, host=host, version="9.9", pid=123, slots=3)


def test_registry_lists_workers_alive_by_staleness(
    make_store: StoreFactory, clock: FrozenClock
) -> None:
    store = make_store(worker_stale_seconds=60)
    registry = store.workers
    registry.register(_me("a", "h1"))
    registry.register(_me("b", "h2"))
    clock.advance(45)
    registry.beat(_me("a", "h1"), running=2)
    clock.advance(30)  # b: 75 s without a heartbeat; a: 30 s
    listed = {w.id: w for w in registry.list()}
    assert listed["a"].alive and listed["a"].running == 2 and listed["a"].slots == 3
    assert listed["a"].version == "9.9" and listed["a"].host == "h1"
    assert listed["a"].heartbeat_at - listed["a"].started_at == dt.timedelta(seconds=45)
    assert not listed["b"].alive
    assert registry.live_hosts() == {"h1"}
    # A heartbeat whose row is gone registers the worker again.
    registry.leave("a")
    assert registry.live_hosts() == set()
    registry.beat(_me("a", "h1"), running=0)
    assert registry.live_hosts() == {"h1"}
    # Dead rows are forgotten a week after their last heartbeat, live ones never.
    clock.advance(7 * 86400 - 60)
    registry.beat(_me("a", "h1"), running=0)
    assert registry.forget_dead() == 1
    assert [w.id for w in registry.list()] == ["a"]


@pytest.fixture
def real_time(db_url: str) -> Iterator[StoreFactory]:
    """Stores on the system clock, for tests with real workers."""
    engines: list[sa.Engine] = []

    def make(**config: Any) -> TaskStore:
        engine = create_engine(db_url)
        engines.append(engine)
        migrations.upgrade(engine)
        return TaskStore(engine, SystemClock(), QueueConfig(**config))

    yield make
    for e in engines:
        e.dispose()


def test_a_worker_registers_heartbeats_and_leaves(real_time: StoreFactory) -> None:
    store = real_time(worker_stale_seconds=0.4, lease_seconds=2)
    release = threading.Event()

    def hold(ctx: Any) -> None:
        release.wait(10)

    w = Worker(
        store, {"delete": FunctionHandler(hold)}, clock=SystemClock(), host="h9", concurrency=2
    )
    w.start()
    try:
        store.enqueue_one(EnqueueRequest("p", "delete"))
        deadline = time.monotonic() + 10
        seen = None
        while time.monotonic() < deadline:
            seen = next((x for x in store.workers.list() if x.id == w.worker_id), None)
            if seen is not None and seen.running == 1 and seen.heartbeat_at > seen.started_at:
                break
            time.sleep(0.05)
        assert seen is not None and seen.alive and seen.host == "h9" and seen.slots == 2
        assert seen.running == 1 and seen.heartbeat_at > seen.started_at
    finally:
        release.set()
        w.stop(grace=5)
    assert store.workers.list() == []


def _routed(store: TaskStore, host: str) -> Task:
    return store.enqueue_one(EnqueueRequest("p", "backup", route=host))


def test_waiting_for_an_absent_host_is_shown_and_fails_at_the_start_deadline(
    make_store: StoreFactory, clock: FrozenClock
) -> None:
    store = make_store(worker_stale_seconds=60, start_deadline_seconds=3600)
    logs = OperationLogService(store)
    ended: list[Task] = []
    on_end = lambda _type: lambda _conn, task: ended.append(task)  # noqa: E731
    store.workers.register(_me("w1", "h1"))
    stranded = _routed(store, "h3")
    served = _routed(store, "h1")
    anywhere = store.enqueue_one(EnqueueRequest("p", "backup"))

    assert logs.get(None, stranded.id).extra_info["waiting_reason"] == "no live worker on host h3"
    assert "waiting_reason" not in logs.get(None, served.id).extra_info
    assert "waiting_reason" not in logs.get(None, anywhere.id).extra_info
    page = logs.search(store_filter(), page_of(10))
    assert {x.task.id: x.extra_info.get("waiting_reason") for x in page.items} == {
        stranded.id: "no live worker on host h3",
        served.id: None,
        anywhere.id: None,
    }

    clock.advance(3599)
    store.workers.beat(_me("w1", "h1"), running=0)
    assert store.fail_unserved(store.workers.live_hosts(), ["backup"], on_end) == 0
    clock.advance(2)
    store.workers.beat(_me("w1", "h1"), running=0)
    # Every worker looks; the task fails once, and its end hook runs once.
    assert store.fail_unserved(store.workers.live_hosts(), ["backup"], on_end) == 1
    assert store.fail_unserved(store.workers.live_hosts(), ["backup"], on_end) == 0
    failed = store.get(stranded.id)
    assert failed is not None and failed.status is TaskStatus.FAILED
    assert failed.ended_at == clock.now()
    assert failed.error_info is not None
    assert failed.error_info["message"].startswith("No live worker on host h3")
    assert "3600 seconds" in failed.error_info["message"]
    assert [t.id for t in ended] == [stranded.id]
    assert "waiting_reason" not in logs.get(None, stranded.id).extra_info
    # Tasks a live host serves, and unrouted ones, wait on.
    assert store.get(served.id).status is TaskStatus.WAITING  # type: ignore[union-attr]
    assert store.get(anywhere.id).status is TaskStatus.WAITING  # type: ignore[union-attr]


def test_a_worker_of_the_host_appearing_in_time_takes_the_task(
    make_store: StoreFactory, clock: FrozenClock
) -> None:
    store = make_store(worker_stale_seconds=60, start_deadline_seconds=3600)
    logs = OperationLogService(store)
    task = _routed(store, "h3")
    clock.advance(1800)
    assert logs.get(None, task.id).extra_info["waiting_reason"] == "no live worker on host h3"
    store.workers.register(_me("w3", "h3"))
    assert "waiting_reason" not in logs.get(None, task.id).extra_info
    clock.advance(3600)
    store.workers.beat(_me("w3", "h3"), running=0)
    assert store.fail_unserved(store.workers.live_hosts(), ["backup"]) == 0
    claimed = store.claim("w3", "h3", ["backup"])
    assert claimed is not None and claimed.id == task.id


def test_workers_fail_the_stranded_task_and_a_late_worker_runs_the_other(
    real_time: StoreFactory,
) -> None:
    """End to end with real workers: h1's worker fails the task for h3 at its deadline;
    a task for h2 whose worker starts before its deadline runs."""
    store = real_time(worker_stale_seconds=0.4, start_deadline_seconds=1.5, lease_seconds=2)
    ran: list[str] = []
    handlers = {"backup": FunctionHandler(lambda ctx: ran.append(ctx.task.id))}
    h1 = Worker(store, handlers, clock=SystemClock(), host="h1")
    h1.start()
    h2: Worker | None = None
    try:
        stranded = _routed(store, "h3")
        late = _routed(store, "h2")
        time.sleep(0.5)
        h2 = Worker(store, handlers, clock=SystemClock(), host="h2")
        h2.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if store.get(stranded.id).status.terminal:  # type: ignore[union-attr]
                break
            time.sleep(0.05)
    finally:
        h1.stop(grace=5)
        if h2 is not None:
            h2.stop(grace=5)
    failed = store.get(stranded.id)
    assert failed is not None and failed.status is TaskStatus.FAILED
    assert (
        failed.error_info is not None
        and "No live worker on host h3" in failed.error_info["message"]
    )
    elapsed = (failed.ended_at - failed.created_at).total_seconds()  # type: ignore[operator]
    assert 1.5 <= elapsed < 5
    assert store.get(late.id).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    assert ran == [late.id]


def test_pruning_keeps_what_it_must(make_store: StoreFactory, clock: FrozenClock) -> None:
    store = make_store(retention_seconds=90 * 86400)
    old_done = _finished(store, clock, TaskStatus.SUCCESS)
    old_failed = _finished(store, clock, TaskStatus.FAILED)
    old_running = store.enqueue_one(EnqueueRequest("p", "delete"))
    old_waiting = store.enqueue_one(EnqueueRequest("p", "delete"))
    claimed = store.claim("w", None, ["delete"])
    assert claimed is not None and claimed.id == old_running.id
    clock.advance(60 * 86400)
    recent = _finished(store, clock, TaskStatus.SUCCESS)
    clock.advance(30 * 86400 + 1)  # the first two ended 90 days and a second ago
    assert store.prune(batch=1) == 2
    left = {t.id: t.status for t in _all(store)}
    assert old_done.id not in left and old_failed.id not in left
    assert left == {
        old_running.id: TaskStatus.RUNNING,
        old_waiting.id: TaskStatus.WAITING,
        recent.id: TaskStatus.SUCCESS,
    }
    assert store.prune() == 0


def _finished(store: TaskStore, clock: FrozenClock, status: TaskStatus) -> Task:
    task = store.enqueue_one(EnqueueRequest("done", "restore"))
    claimed = store.claim("w", None, ["restore"])
    assert claimed is not None and claimed.id == task.id
    assert store.finish(claimed, "w", status)
    return task


def _all(store: TaskStore) -> list[Task]:
    with store.engine.connect() as conn:
        return [Task.from_row(r) for r in conn.execute(sa.select(*tasks.c))]


def store_filter() -> Any:
    from csbs.queue import TaskFilter

    return TaskFilter()


def page_of(limit: int) -> Any:
    from csbs.domain.paging import page_request

    return page_request(
        limit=limit,
        marker=None,
        offset=None,
        sort=None,
        allowed_sort=frozenset({"created_at"}),
        default_sort="created_at:desc",
    )
