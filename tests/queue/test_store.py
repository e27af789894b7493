"""The queue's SQL: FIFO, admission limits, fairness, routing, leases, reaping, reads."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from csbs.domain.clock import FrozenClock
from csbs.domain.paging import PageRequest, SortKey
from csbs.queue import EnqueueRequest, Task, TaskFilter, TaskStatus, TaskStore
from csbs.queue.jobs import Refs

DELETE = "delete"


def enqueue(store: TaskStore, project: str, n: int = 1, op: str = DELETE, **kw: Any) -> list[Task]:
    return [
        store.enqueue_one(EnqueueRequest(project_id=project, operation_type=op, **kw))
        for _ in range(n)
    ]


def test_claim_is_fifo_and_records_the_lease(make_store: Any, clock: FrozenClock) -> None:
    store: TaskStore = make_store(lease_seconds=30, deadlines={DELETE: 60})
    queued = enqueue(store, "p1", 3)
    claimed = [store.claim("w1", None, [DELETE]) for _ in range(3)]
    assert [t.id for t in claimed if t] == [t.id for t in queued]
    first = claimed[0]
    assert first is not None
    assert first.status is TaskStatus.RUNNING
    assert first.attempts == 1
    assert first.lease_owner == "w1"
    assert first.lease_expires_at == clock.now() + __import__("datetime").timedelta(seconds=30)
    assert first.started_at == clock.now()
    assert first.deadline_at == clock.now() + __import__("datetime").timedelta(seconds=60)
    assert store.claim("w1", None, [DELETE]) is None


def test_per_project_limit_holds_and_frees(make_store: Any) -> None:
    store: TaskStore = make_store(limits={DELETE: 2})
    enqueue(store, "p1", 5)
    a = store.claim("w", None, [DELETE])
    b = store.claim("w", None, [DELETE])
    assert a and b
    assert store.claim("w", None, [DELETE]) is None, "a third task ran past the limit of 2"
    assert store.finish(a, "w", TaskStatus.SUCCESS)
    c = store.claim("w", None, [DELETE])
    assert c is not None and c.seq > b.seq
    assert store.claim("w", None, [DELETE]) is None


def test_limits_are_per_type(make_store: Any) -> None:
    store: TaskStore = make_store(limits={DELETE: 1, "backup": 1})
    enqueue(store, "p1", 2, op=DELETE)
    enqueue(store, "p1", 2, op="backup")
    got = [store.claim("w", None, [DELETE, "backup"]) for _ in range(3)]
    assert sorted(t.operation_type for t in got if t) == ["backup", DELETE]
    assert got[2] is None


def test_only_handled_types_are_claimed(make_store: Any) -> None:
    store: TaskStore = make_store()
    enqueue(store, "p1", 1, op="restore")
    assert store.claim("w", None, [DELETE]) is None
    assert store.claim("w", None, ["restore"]) is not None


def test_fairness_new_project_goes_next(make_store: Any, clock: FrozenClock) -> None:
    store: TaskStore = make_store(limits={DELETE: 100})
    enqueue(store, "A", 200)
    for _ in range(3):
        clock.advance(1)
        assert store.claim("w", None, [DELETE]).project_id == "A"  # type: ignore[union-attr]
    (b,) = enqueue(store, "B", 1)
    clock.advance(1)
    nxt = store.claim("w", None, [DELETE])
    assert nxt is not None and nxt.id == b.id
    clock.advance(1)
    assert store.claim("w", None, [DELETE]).project_id == "A"  # type: ignore[union-attr]


def test_projects_take_turns(make_store: Any, clock: FrozenClock) -> None:
    store: TaskStore = make_store(limits={DELETE: 100})
    for p in ("A", "B", "C"):
        enqueue(store, p, 5)
    order = []
    for _ in range(9):
        clock.advance(1)
        order.append(store.claim("w", None, [DELETE]).project_id)  # type: ignore[union-attr]
    assert order == ["A", "B", "C"] * 3


def test_routing(make_store: Any) -> None:
    store: TaskStore = make_store()
    (routed,) = enqueue(store, "p", 1, route="h1")
    assert store.claim("w2", "h2", [DELETE]) is None
    got = store.claim("w1", "h1", [DELETE])
    assert got is not None and got.id == routed.id
    (anywhere,) = enqueue(store, "p", 1)
    assert store.claim("w2", "h2", [DELETE]).id == anywhere.id  # type: ignore[union-attr]


def test_heartbeat_extends_and_reaper_requeues(make_store: Any, clock: FrozenClock) -> None:
    store: TaskStore = make_store(lease_seconds=10, max_attempts=3)
    (queued,) = enqueue(store, "p")
    t1 = store.claim("w1", None, [DELETE])
    assert t1 is not None
    clock.advance(8)
    assert store.heartbeat("w1", [t1.id]) == {t1.id: False}
    clock.advance(8)
    assert store.reap([DELETE]) == 0, "a live lease was reaped"
    clock.advance(11)
    assert store.reap([DELETE]) == 1
    assert store.get(queued.id).status is TaskStatus.WAITING  # type: ignore[union-attr]
    t2 = store.claim("w2", None, [DELETE])
    assert t2 is not None and t2.attempts == 2
    # The first worker comes back: it owns nothing any more.
    assert store.heartbeat("w1", [t1.id]) == {}
    assert not store.finish(t1, "w1", TaskStatus.SUCCESS)
    assert store.finish(t2, "w2", TaskStatus.SUCCESS)
    assert store.get(queued.id).status is TaskStatus.SUCCESS  # type: ignore[union-attr]


def test_lost_workers_do_not_use_up_attempts_only_the_deadline_ends_a_task(
    make_store: Any, clock: FrozenClock
) -> None:
    store: TaskStore = make_store(lease_seconds=1, max_attempts=2, deadlines={DELETE: 30})
    ended: list[Task] = []

    def hook(conn: sa.Connection, task: Task) -> None:
        assert conn.in_transaction()
        ended.append(task)

    (a,) = enqueue(store, "p")
    for lost in range(1, 9):  # eight crashes in a row, four times max_attempts
        assert store.claim("w", None, [DELETE]) is not None
        clock.advance(2)
        assert store.reap([DELETE], lambda _t: hook) == 1
        again = store.get(a.id)
        assert again is not None and again.status is TaskStatus.WAITING
        assert again.interruptions == lost and again.failures == 0
    assert ended == []
    last = store.claim("w", None, [DELETE])
    assert last is not None and last.attempts == 9
    assert store.finish(last, "w", TaskStatus.SUCCESS)

    store2: TaskStore = make_store(lease_seconds=1, max_attempts=5, deadlines={DELETE: 5})
    (b,) = enqueue(store2, "q")
    store2.claim("w", None, [DELETE])
    clock.advance(6)
    assert store2.reap([DELETE], lambda _t: hook) == 1
    assert store2.get(b.id).status is TaskStatus.TIMEOUT  # type: ignore[union-attr]
    assert [t.id for t in ended] == [b.id]
    assert all(t.status.terminal for t in ended)


def test_hand_back_and_interrupted_retries_are_interruptions(
    make_store: Any, clock: FrozenClock
) -> None:
    store: TaskStore = make_store(
        max_attempts=1, deadlines={DELETE: 1000}, retry_base_delay=2.0, retry_max_delay=300.0
    )
    (a,) = enqueue(store, "p")
    t = store.claim("w", None, [DELETE])
    assert t is not None
    assert store.hand_back("w", [t.id]) == 1
    t = store.claim("w", None, [DELETE])
    assert t is not None and t.interruptions == 1 and t.failures == 1
    error = {"code": "CSBS.9998", "message": "database"}
    assert store.retry(t, "w", delay=None, error=error, interrupted=True)
    clock.advance(3)  # back-off of the second interruption: 2 s x 2
    assert store.claim("w", None, [DELETE]) is None
    clock.advance(2)
    t = store.claim("w", None, [DELETE])
    assert t is not None and (t.attempts, t.interruptions, t.failures) == (3, 2, 1)
    # A retry the task asked for itself counts as a failure.
    assert store.retry(t, "w", delay=0, error=error)
    t = store.claim("w", None, [DELETE])
    assert t is not None and t.id == a.id and t.failures == 2


def test_deadline_survives_retries(make_store: Any, clock: FrozenClock) -> None:
    store: TaskStore = make_store(deadlines={DELETE: 100})
    enqueue(store, "p")
    t1 = store.claim("w", None, [DELETE])
    assert t1 is not None
    clock.advance(10)
    assert store.retry(t1, "w", delay=5, error={"code": "x", "message": "y"})
    assert store.claim("w", None, [DELETE]) is None, "claimed before its back-off ended"
    clock.advance(5)
    t2 = store.claim("w", None, [DELETE])
    assert t2 is not None and t2.attempts == 2
    assert t2.deadline_at == t1.deadline_at


def test_hooks_run_in_the_state_changing_transaction(make_store: Any) -> None:
    store: TaskStore = make_store()
    enqueue(store, "p")
    seen: list[str] = []

    def on_start(conn: sa.Connection, task: Task) -> None:
        status = conn.execute(
            sa.text("SELECT status FROM tasks WHERE id = :i"), {"i": task.id}
        ).scalar()
        seen.append(f"start:{status}")

    def on_end(conn: sa.Connection, task: Task) -> None:
        status = conn.execute(
            sa.text("SELECT status FROM tasks WHERE id = :i"), {"i": task.id}
        ).scalar()
        seen.append(f"end:{status}")

    t = store.claim("w", None, [DELETE], lambda _t: on_start)
    assert t is not None
    assert store.finish(
        t, "w", TaskStatus.FAILED, error={"code": "CSBS.1", "message": "m"}, on_end=on_end
    )
    assert seen == ["start:running", "end:failed"]


def test_a_failing_hook_rolls_back_the_claim(make_store: Any) -> None:
    store: TaskStore = make_store()
    (queued,) = enqueue(store, "p")

    def boom(conn: sa.Connection, task: Task) -> None:
        raise RuntimeError("hook failed")

    try:
        store.claim("w", None, [DELETE], lambda _t: boom)
    except RuntimeError:
        pass
    assert store.get(queued.id).status is TaskStatus.WAITING  # type: ignore[union-attr]


def test_enqueue_joins_the_callers_transaction(make_store: Any) -> None:
    store: TaskStore = make_store()
    try:
        with store.engine.begin() as conn:
            store.enqueue(conn, EnqueueRequest(project_id="p", operation_type=DELETE))
            raise RuntimeError("caller fails after enqueueing")
    except RuntimeError:
        pass
    assert store.count(TaskFilter(project_id="p")) == 0


def test_search_filters_sorts_pages(make_store: Any, clock: FrozenClock) -> None:
    store: TaskStore = make_store(limits={DELETE: 100})
    made = []
    for i in range(7):
        clock.advance(1)
        made += enqueue(store, "p", 1, refs=Refs(checkpoint_id=f"cp{i % 2}", resource_id="srv"))
    enqueue(store, "other", 2)
    newest_first = [t.id for t in reversed(made)]
    page = PageRequest(limit=3, sort=(SortKey("created_at", True),))
    first = store.search(TaskFilter(project_id="p"), page)
    assert [t.id for t in first.items] == newest_first[:3] and first.has_more
    second = store.search(
        TaskFilter(project_id="p"), PageRequest(limit=3, marker=first.items[-1].id, sort=page.sort)
    )
    assert [t.id for t in second.items] == newest_first[3:6] and second.has_more
    third = store.search(
        TaskFilter(project_id="p"), PageRequest(limit=3, marker=second.items[-1].id, sort=page.sort)
    )
    assert [t.id for t in third.items] == newest_first[6:] and not third.has_more
    asc = store.search(
        TaskFilter(project_id="p"), PageRequest(sort=(SortKey("created_at", False),))
    )
    assert [t.id for t in asc.items] == [t.id for t in made]
    cp0 = store.search(TaskFilter(project_id="p", checkpoint_id="cp0"), PageRequest())
    assert {t.id for t in cp0.items} == {t.id for t in made[0::2]}
    offset = store.search(
        TaskFilter(project_id="p"), PageRequest(limit=2, offset=5, sort=page.sort)
    )
    assert [t.id for t in offset.items] == newest_first[5:7]


def test_queue_positions(make_store: Any) -> None:
    store: TaskStore = make_store(limits={DELETE: 1})
    made = enqueue(store, "p", 4)
    store.claim("w", None, [DELETE])
    positions = store.queue_positions("p")
    assert positions == {made[1].id: 1, made[2].id: 2, made[3].id: 3}


def test_enqueue_does_not_wait_for_a_transaction_holding_the_group_row(make_store: Any) -> None:
    """A finish holds its group's row until it commits, and its end hook goes on to lock
    backup and policy rows; an enqueue in a transaction that holds those rows must not wait
    for the group row, or the two deadlock (seen as DELETE of a sibling backup -> 503)."""
    import threading

    store = make_store(limits={"delete": 5})
    store.enqueue_one(EnqueueRequest(project_id="p", operation_type="delete"))
    holder = store.engine.connect()
    tx = holder.begin()
    holder.execute(sa.text("UPDATE task_queues SET running = running WHERE project_id = 'p'"))
    done = threading.Event()
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            store.enqueue_one(EnqueueRequest(project_id="p", operation_type="delete"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        done.set()

    t = threading.Thread(target=enqueue)
    t.start()
    try:
        if store.is_postgres:
            # On PostgreSQL the enqueue goes ahead while the group row stays locked.
            assert done.wait(10), "enqueue waited for the transaction holding the group row"
    finally:
        tx.rollback()
        holder.close()
        t.join(30)
    assert not errors and done.is_set()
    assert store.count(TaskFilter(project_id="p")) == 2
