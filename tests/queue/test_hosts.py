"""Tasks routed to a host wake only the workers of that host, and a claim reads no other
host's backlog."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from csbs import migrations
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.queue import EnqueueRequest, QueueConfig, TaskStatus, TaskStore, Worker
from csbs.queue.worker import FunctionHandler

#: Host names of this test only: PostgreSQL's channels are shared by every schema of the
#: test database, so a name another test uses could wake these workers.
H1 = f"h1-{time.monotonic_ns()}"
H2 = f"h2-{time.monotonic_ns()}"


def _store(db_url: str) -> TaskStore:
    engine = create_engine(db_url)
    migrations.upgrade(engine)
    return TaskStore(engine, SystemClock(), QueueConfig(default_limit=1000, lease_seconds=5))


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[TaskStore, TaskStore]]:
    """The workers' store, and another (as another process's) that enqueues: only a
    notification (PostgreSQL) or a datagram (SQLite) can wake the workers."""
    workers, enqueuer = _store(db_url), _store(db_url)
    yield workers, enqueuer
    for s in (workers, enqueuer):
        s.engine.dispose()


def test_a_hosts_workers_are_not_woken_by_another_hosts_tasks(
    stores: tuple[TaskStore, TaskStore],
) -> None:
    store, enqueuer = stores
    claims: collections.Counter[str | None] = collections.Counter()
    lock = threading.Lock()
    claim_many = store.claim_many

    def counting(worker_id: str, host: str | None, *args: Any, **kw: Any) -> Any:
        with lock:
            claims[host] += 1
        return claim_many(worker_id, host, *args, **kw)

    store.claim_many = counting  # type: ignore[method-assign]
    ran: list[str] = []
    handlers = {"backup": FunctionHandler(lambda ctx: ran.append(ctx.task.id))}
    # The idle poll is a minute: within the test only wake-ups make a worker claim.
    workers = [Worker(store, handlers, clock=SystemClock(), host=h, idle_poll=60) for h in (H1, H2)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)  # the first claims at start, and the listeners' first wake-up
        with lock:
            before = dict(claims)
        ids = []
        for _ in range(30):
            ids.append(enqueuer.enqueue_one(EnqueueRequest("p", "backup", route=H2)).id)
            time.sleep(0.02)
        _wait_success(enqueuer, ids)
        time.sleep(0.5)  # the last finishes' notifications
        with lock:
            after = dict(claims)
        # A task routed to no host wakes every worker: h1's listens, it is just not called.
        anywhere = enqueuer.enqueue_one(EnqueueRequest("p", "backup")).id
        _wait_success(enqueuer, [anywhere])
        time.sleep(0.5)
        with lock:
            last = dict(claims)
    finally:
        for w in workers:
            w.stop(grace=5)
    assert sorted(ran[:30]) == sorted(ids)
    assert after[H2] - before[H2] >= 1
    # 30 enqueues and 30 finishes of h2's tasks: h1 did not claim once for them.
    assert after[H1] - before[H1] == 0, (before, after)
    assert last[H1] - after[H1] >= 1 and last[H2] - after[H2] >= 1, (after, last)


def _wait_success(store: TaskStore, ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(store.get(i).status is TaskStatus.SUCCESS for i in ids):  # type: ignore[union-attr]
            return
        time.sleep(0.02)
    raise AssertionError("tasks did not succeed in time")


def test_a_claim_reads_no_other_hosts_backlog(pg_url: str) -> None:
    """2,000 tasks wait for an absent host ahead of one for h1 in the same queue: h1's
    claim takes its task reading a handful of rows (EXPLAIN ANALYZE of the claim's
    statements), not the backlog."""
    store = _store(pg_url)
    try:
        with store.engine.begin() as conn:
            for _ in range(2000):
                store.enqueue(conn, EnqueueRequest("p", "backup", route="absent"))
        mine = store.enqueue_one(EnqueueRequest("p", "backup", route=H1))
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE tasks"))
        rows = _rows_read_by_claim(store, H1)
        assert rows < 50, rows
        claimed = store.claim("w1", H1, ["backup"])
        assert claimed is not None and claimed.id == mine.id
    finally:
        store.engine.dispose()


def _rows_read_by_claim(store: TaskStore, host: str) -> int:
    """Rows the claim's candidate and take statements read from `tasks` (their plans'
    actual rows, plus the rows their filters removed), in a transaction rolled back."""
    stmts = store._claim_statements(host, ("backup",))
    now = SystemClock().now()
    params = {
        "now": now,
        "skipped": [("", "")],
        "g_project": "p",
        "g_type": "backup",
        "b_worker": "w",
        "b_lease_until": now,
    }
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    total = 0
    with store.engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", capture)
        for stmt in (stmts.candidate, stmts.take):
            sent.clear()
            conn.execute(stmt, params).all()
            statement, parameters = sent[-1]
            conn.rollback()
            plan = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
            ).scalar_one()
            conn.rollback()
            total += _tasks_rows(plan)
        sa.event.remove(conn, "before_cursor_execute", capture)
    return total


def _tasks_rows(plan: list[dict[str, Any]]) -> int:
    total = 0
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == "tasks":
            loops = node.get("Actual Loops", 1)
            total += (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
        stack.extend(node.get("Plans", []))
    return total
