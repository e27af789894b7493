"""A task's way through the queue: enqueue, claim with admission control, leases, finish,
retry, hand back, reap.

Admission control: at most `limit(type)` tasks of one operation type run at once in one
project. The row of `task_queues` for (project, type) is the serialisation point and holds
the group's `running` count, changed only in the transactions that move a task into or out
of `running`. A claim locks a group row whose count is under the limit (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, which re-checks the count on the latest row version; SQLite runs the
whole claim in one `BEGIN IMMEDIATE` transaction), takes the group's oldest waiting task and
increments the count. Two workers can therefore never both take the last slot. Groups are
served in order of their last claim (never-claimed first), so one project's long queue cannot
delay another project's task beyond the next free slot.

The hot statements (`statements.py`) are built once, with bind parameters, so a claim costs
a few round trips and little Python.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.operations import TaskStatus
from csbs.domain.workers import no_live_worker
from csbs.queue import statements, wake
from csbs.queue.config import QueueConfig
from csbs.queue.jobs import EnqueueRequest, Task, error_info
from csbs.queue.schema import tasks
from csbs.sql import dialect
from csbs.sql.reads import reader

#: How many candidate groups one claim looks at before giving up (each needs a lock).
_CLAIM_TRIES = 8
_REAP_BATCH = 100

#: Hook run inside the transaction that changes a task's state (e.g. to move a backup's
#: status in the same commit). It receives the connection and the task as updated.
Hook = Callable[[sa.Connection, Task], None]


class Waker(Protocol):
    """Something `TaskLifecycle.poke` wakes: a worker's event, or a worker process's pipe."""

    def set(self) -> None: ...


class TaskLifecycle:
    """Tasks moving through their states: what enqueuers and workers do to the queue's
    tables. Handed an engine; safe to share between threads and processes."""

    def __init__(self, engine: sa.Engine, clock: Clock, config: QueueConfig) -> None:
        self._engine = engine
        self._clock = clock
        self.config = config
        self.is_postgres = dialect.is_postgres(engine)
        self._insert = dialect.insert(engine)
        self._claim_cache: dict[tuple[str | None, tuple[str, ...]], statements.ClaimStatements] = {}
        self._finish_stmt, self._finish_decrement = statements.finish(self.is_postgres)
        self._enqueue_stmt, self._enqueue_group = statements.enqueue(self._insert, self.is_postgres)
        #: Wakers of this process, each with the host of its worker (None: any task).
        self._local_wakers: list[tuple[Waker, str | None]] = []
        self._wakers_lock = threading.Lock()
        #: SQLite: wakes workers of other processes (PostgreSQL's enqueues notify them).
        self._other_processes = wake.sender_for(engine)
        self._reader = reader(engine)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    # -- waking workers in this process -----------------------------------------------------

    def add_local_waker(self, waker: Waker, host: str | None = None) -> None:
        """Wake `waker` on pokes; with a `host`, only for tasks routed to no host or to it."""
        with self._wakers_lock:
            self._local_wakers.append((waker, host))

    def remove_local_waker(self, waker: Waker) -> None:
        with self._wakers_lock:
            self._local_wakers = [(w, h) for w, h in self._local_wakers if w is not waker]

    def poke(self, *routes: str | None) -> None:
        """Wake the idle workers able to take tasks of `routes` (none given: every worker):
        this process's, and on SQLite those of other processes on this machine (call after
        committing an enqueue). A task routed to no host wakes every worker."""
        everyone = not routes or None in routes
        with self._wakers_lock:
            for waker, host in self._local_wakers:
                if everyone or host is None or host in routes:
                    waker.set()
        if self._other_processes is not None:
            self._other_processes.send(None if everyone else routes)

    def wake_local(self) -> None:
        """Wake this process's idle workers only (a wake-up relayed from another process)."""
        with self._wakers_lock:
            for waker, _host in self._local_wakers:
                waker.set()

    def _notify(self, conn: sa.Connection, payload: str, routes: Iterable[str | None]) -> None:
        """PostgreSQL: wake, at commit, the workers able to take tasks of `routes`."""
        if self.is_postgres:
            for channel in sorted({statements.channel_for(r) for r in routes}):
                conn.execute(sa.select(sa.func.pg_notify(channel, payload)))

    # -- enqueue ----------------------------------------------------------------------------

    def enqueue(self, conn: sa.Connection, request: EnqueueRequest) -> Task:
        """Insert a waiting task inside the caller's transaction (call `poke` after commit)."""
        now = self._clock.now()
        refs = request.refs
        params = {
            "e_id": request.task_id or new_id(),
            "e_project": request.project_id,
            "e_type": request.operation_type,
            "e_params": dict(request.params),
            "e_provider": refs.provider_id,
            "e_checkpoint": refs.checkpoint_id,
            "e_item": refs.checkpoint_item_id,
            "e_plan": refs.plan_id,
            "e_restore": refs.restore_id,
            "e_resource": refs.resource_id,
            "e_resource_name": refs.resource_name,
            "e_now": now,
            "e_max_attempts": self.config.max_attempts,
            "e_deadline": request.deadline_seconds
            or self.config.deadline_for(request.operation_type),
            "e_route": request.route,
        }
        if self._enqueue_group is not None:
            conn.execute(self._enqueue_group, params)
        return Task.from_row(conn.execute(self._enqueue_stmt, params).one())

    #: The columns, in this order, of the rows `enqueue_each` makes tasks of.
    EACH_COLUMNS = statements.EACH_COLUMNS

    def enqueue_each(
        self, rows: sa.Select[Any], operation_type: str
    ) -> tuple[list[sa.CTE], sa.ScalarSelect[Any]]:
        """PostgreSQL: enqueue a waiting task for each row of `rows`, inside a statement of
        the caller's.

        `rows` selects `EACH_COLUMNS`, in that order and in queue order. Returns the
        data-modifying CTEs to add to the statement (they run once, whether or not it reads
        them) and a column to select: it wakes listening workers when a task was added. The
        statement binds `e_now`.
        """
        return statements.enqueue_each(rows, operation_type, self.config, self._insert)

    def enqueue_one(self, request: EnqueueRequest) -> Task:
        """Enqueue in a transaction of its own."""
        with self._engine.begin() as conn:
            task = self.enqueue(conn, request)
        self.poke(task.route)
        return task

    def request_cancel(self, task_id: str) -> bool:
        """Ask the worker running `task_id` to stop (seen at its next heartbeat)."""
        with self._engine.begin() as conn:
            result = conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.RUNNING.value)
                .values(cancel_requested=True)
            )
        return bool(result.rowcount)

    # -- claim ------------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        host: str | None,
        types: Sequence[str],
        on_start: Callable[[str], Hook | None] | None = None,
    ) -> Task | None:
        """Take the next task this worker may run, or None when there is none."""
        got = self.claim_many(worker_id, host, types, 1, on_start)
        return got[0] if got else None

    def claim_many(
        self,
        worker_id: str,
        host: str | None,
        types: Sequence[str],
        limit: int,
        on_start: Callable[[str], Hook | None] | None = None,
    ) -> list[Task]:
        """Take up to `limit` tasks this worker may run, in one transaction.

        Groups are visited in fairness order; after each claim the group's last-claim time
        moves, so one batch spreads over projects exactly as single claims would.

        Args:
            worker_id: the lease owner to record.
            host: the worker's host name; it takes tasks routed to it or to any host.
            types: the operation types it has handlers for.
            limit: the worker's free slots.
            on_start: operation type -> hook run in the claiming transaction.
        """
        if not types or limit < 1:
            return []
        claimed: list[Task] = []
        stmts = self._claim_statements(host, tuple(sorted(types)))
        with self._engine.begin() as conn:
            # Read the clock inside the transaction (on SQLite, after the write lock), so
            # start times order like the claims themselves.
            now = self._clock.now()
            lease_until = now + dt.timedelta(seconds=self.config.lease_seconds)
            skipped: list[tuple[str, str]] = [("", "")]
            misses = 0
            while len(claimed) < limit and misses < _CLAIM_TRIES:
                group = conn.execute(stmts.candidate, {"now": now, "skipped": skipped}).first()
                if group is None:
                    break
                project_id, operation_type = group
                # The start time is read once the group is ours (its row is locked on
                # PostgreSQL): a slot freed by a finish is then always seen to end before
                # the task that takes it starts.
                now = max(now, self._clock.now())
                keys = {"g_project": project_id, "g_type": operation_type}
                params = {**keys, "now": now, "b_worker": worker_id, "b_lease_until": lease_until}
                row = conn.execute(stmts.take, params).first()
                if row is None:
                    # Its waiting tasks were taken meanwhile (PostgreSQL) or are not ours.
                    skipped.append((project_id, operation_type))
                    misses += 1
                    continue
                if stmts.count is not None:
                    conn.execute(stmts.count, params)
                task = Task.from_row(row)
                hook = on_start(operation_type) if on_start else None
                if hook is not None:
                    hook(conn, task)
                claimed.append(task)
                # Later claims of this batch order after this one (fairness clock).
                now = now + dt.timedelta(microseconds=1)
        return claimed

    def _claim_statements(
        self, host: str | None, types: tuple[str, ...]
    ) -> statements.ClaimStatements:
        key = (host, types)
        stmts = self._claim_cache.get(key)
        if stmts is None:
            stmts = statements.claim(host, types, self.config, self.is_postgres)
            self._claim_cache[key] = stmts
        return stmts

    def _leave_running(self, conn: sa.Connection, task: Task) -> None:
        """The group of `task` has one fewer running task (same transaction as the change)."""
        conn.execute(
            statements.LEAVE_RUNNING, {"g_project": task.project_id, "g_type": task.operation_type}
        )

    # -- while running ----------------------------------------------------------------------

    def _owned(self, task: Task, worker_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            tasks.c.id == task.id,
            tasks.c.lease_owner == worker_id,
            tasks.c.attempts == task.attempts,
            tasks.c.status == TaskStatus.RUNNING.value,
        )

    def heartbeat(self, worker_id: str, task_ids: Iterable[str]) -> dict[str, bool]:
        """Extend the leases of `task_ids`; returns id -> cancel requested, for those still ours."""
        ids = list(task_ids)
        if not ids:
            return {}
        now = self._clock.now()
        mine = sa.and_(
            tasks.c.id.in_(ids),
            tasks.c.lease_owner == worker_id,
            tasks.c.status == TaskStatus.RUNNING.value,
        )
        with self._engine.begin() as conn:
            conn.execute(
                tasks.update()
                .where(mine)
                .values(lease_expires_at=now + dt.timedelta(seconds=self.config.lease_seconds))
            )
            rows = conn.execute(sa.select(tasks.c.id, tasks.c.cancel_requested).where(mine))
            return {task_id: bool(cancel) for task_id, cancel in rows}

    def report(
        self, task: Task, worker_id: str, progress: int, extra_info: Mapping[str, Any]
    ) -> bool:
        """Record progress; False when the task is no longer this worker's."""
        with self._engine.begin() as conn:
            result = conn.execute(
                tasks.update()
                .where(self._owned(task, worker_id))
                .values(progress=progress, extra_info=dict(extra_info))
            )
        return bool(result.rowcount)

    def finish(
        self,
        task: Task,
        worker_id: str,
        status: TaskStatus,
        *,
        progress: int | None = None,
        extra_info: Mapping[str, Any] | None = None,
        error: Mapping[str, Any] | None = None,
        on_end: Hook | None = None,
    ) -> bool:
        """Record a terminal status; False (and nothing changed) when the lease was lost."""
        assert status.terminal
        params = {
            "f_id": task.id,
            "f_owner": worker_id,
            "f_attempts": task.attempts,
            "f_status": status.value,
            "f_error": dict(error) if error else None,
            "f_progress": task.progress if progress is None else progress,
            "f_extra": dict(task.extra_info if extra_info is None else extra_info),
            "g_project": task.project_id,
            "g_type": task.operation_type,
        }
        with self._engine.begin() as conn:
            params["f_now"] = self._clock.now()
            row = conn.execute(self._finish_stmt, params).first()
            if row is not None and self._finish_decrement is not None:
                conn.execute(self._finish_decrement, params)
            if row is None:
                return False
            if on_end is not None:
                on_end(conn, Task.from_row(row))
        self.poke(task.route)
        return True

    def retry(
        self,
        task: Task,
        worker_id: str,
        *,
        delay: float | None,
        error: Mapping[str, Any],
        interrupted: bool = False,
    ) -> bool:
        """Put the task back to waiting after `delay` (default: exponential back-off).

        `interrupted`: the attempt ended through no fault of the task (the database was
        lost under it); it does not count toward `max_attempts` and backs off on its own
        count of interruptions.
        """
        if delay is None:
            exponent = task.interruptions if interrupted else max(0, task.failures - 1)
            delay = min(
                self.config.retry_max_delay,
                self.config.retry_base_delay * 2 ** min(exponent, 16),
            )
        now = self._clock.now()
        values: dict[str, Any] = {
            "status": TaskStatus.WAITING.value,
            "lease_owner": None,
            "lease_expires_at": None,
            "not_before": now + dt.timedelta(seconds=delay),
            "error_info": dict(error),
        }
        if interrupted:
            values["interruptions"] = tasks.c.interruptions + 1
        with self._engine.begin() as conn:
            result = conn.execute(tasks.update().where(self._owned(task, worker_id)).values(values))
            if result.rowcount:
                self._leave_running(conn, task)
            self._notify(conn, task.operation_type, [task.route])
        return bool(result.rowcount)

    def hand_back(self, worker_id: str, task_ids: Iterable[str]) -> int:
        """Return running tasks of this worker to waiting (graceful shutdown; an
        interruption, which does not count toward `max_attempts`)."""
        ids = list(task_ids)
        if not ids:
            return 0
        now = self._clock.now()
        with self._engine.begin() as conn:
            rows = conn.execute(
                tasks.update()
                .where(
                    tasks.c.id.in_(ids),
                    tasks.c.lease_owner == worker_id,
                    tasks.c.status == TaskStatus.RUNNING.value,
                )
                .values(
                    status=TaskStatus.WAITING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    not_before=now,
                    interruptions=tasks.c.interruptions + 1,
                )
                .returning(*tasks.c)
            ).all()
            handed = [Task.from_row(row) for row in rows]
            for task in handed:
                self._leave_running(conn, task)
            self._notify(conn, "hand_back", [t.route for t in handed])
        return len(rows)

    def reap(self, types: Sequence[str], on_end: Callable[[str], Hook | None] | None = None) -> int:
        """Deal with running tasks whose lease expired (their worker died or hung).

        Past the deadline -> timeout; otherwise back to waiting at once. A lost worker is
        no failure of the task (handlers are idempotent and resumable): it counts as an
        interruption, not toward `max_attempts`, and only the deadline ends a task whose
        workers keep being lost. The lease itself is the back-off: the task is found only
        once it has run out.
        Only tasks of `types` are touched, so the end hooks of their handlers can run.
        """
        if not types:
            return 0
        now = self._clock.now()
        done = 0
        reaped: set[str | None] = set()
        with self._engine.begin() as conn:
            stmt = (
                sa.select(*tasks.c)
                .where(
                    statements.status_is(TaskStatus.RUNNING),
                    tasks.c.lease_expires_at < now,
                    tasks.c.operation_type.in_(list(types)),
                )
                .order_by(tasks.c.seq)
                .limit(_REAP_BATCH)
            )
            if self.is_postgres:
                stmt = stmt.with_for_update(skip_locked=True)
            for row in conn.execute(stmt).all():
                task = Task.from_row(row)
                stale = sa.and_(
                    tasks.c.id == task.id,
                    tasks.c.status == TaskStatus.RUNNING.value,
                    tasks.c.lease_expires_at < now,
                )
                cleared = {"lease_owner": None, "lease_expires_at": None}
                values: dict[str, Any]
                if task.deadline_at is not None and task.deadline_at <= now:
                    values = {
                        **cleared,
                        "status": TaskStatus.TIMEOUT.value,
                        "ended_at": now,
                        "error_info": error_info(
                            "CSBS.9999", "The task passed its deadline while its worker was gone."
                        ),
                    }
                else:
                    values = {
                        **cleared,
                        "status": TaskStatus.WAITING.value,
                        "not_before": now,
                        "interruptions": tasks.c.interruptions + 1,
                    }
                updated = conn.execute(
                    tasks.update().where(stale).values(**values).returning(*tasks.c)
                ).first()
                if updated is None:
                    continue
                done += 1
                new = Task.from_row(updated)
                self._leave_running(conn, new)
                reaped.add(new.route)  # back to waiting, or its slot is free
                if new.status.terminal and on_end is not None:
                    hook = on_end(new.operation_type)
                    if hook is not None:
                        hook(conn, new)
            if reaped:
                self._notify(conn, "reap", reaped)
        return done

    # -- housekeeping: tasks no worker can take, ended tasks --------------------------------

    def fail_unserved(
        self,
        live_hosts: Iterable[str],
        types: Sequence[str],
        on_end: Callable[[str], Hook | None] | None = None,
    ) -> int:
        """Fail the waiting tasks routed to a host with no live worker (none of
        `live_hosts`) once `start_deadline_seconds` have passed since their enqueue.

        Safe to run in every worker at once: on PostgreSQL the rows are taken with `SKIP
        LOCKED` and the change re-checks `waiting`, so a task ends once, and a task a worker
        that appeared meanwhile claimed is left alone. Only tasks of `types` are touched, so
        the end hooks of their handlers can run (a backup's record goes to `error`).
        """
        if not types:
            return 0
        hosts = sorted(live_hosts)
        now = self._clock.now()
        cutoff = now - dt.timedelta(seconds=self.config.start_deadline_seconds)
        stmt = (
            sa.select(*tasks.c)
            .where(
                statements.status_is(TaskStatus.WAITING),
                tasks.c.route.is_not(None),
                tasks.c.route.not_in(hosts),
                tasks.c.created_at <= cutoff,
                tasks.c.operation_type.in_(list(types)),
            )
            .order_by(tasks.c.seq)
            .limit(_REAP_BATCH)
        )
        # Nearly always there is none: look without taking SQLite's write lock first.
        with self._reader.begin() as conn:
            if conn.execute(stmt.with_only_columns(tasks.c.seq)).first() is None:
                return 0
        if self.is_postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        done = 0
        with self._engine.begin() as conn:
            for row in conn.execute(stmt).all():
                task = Task.from_row(row)
                reason = (
                    f"{no_live_worker(str(task.route))}: the task could not start within "
                    f"{self.config.start_deadline_seconds:g} seconds of its creation."
                )
                updated = conn.execute(
                    tasks.update()
                    .where(tasks.c.id == task.id, tasks.c.status == TaskStatus.WAITING.value)
                    .values(
                        status=TaskStatus.FAILED.value,
                        ended_at=now,
                        error_info=error_info("CSBS.9999", reason[:1].upper() + reason[1:]),
                    )
                    .returning(*tasks.c)
                ).first()
                if updated is None:
                    continue
                done += 1
                hook = on_end(task.operation_type) if on_end is not None else None
                if hook is not None:
                    hook(conn, Task.from_row(updated))
        return done

    def prune(self, batch: int = 1000, batches: int = 20) -> int:
        """Remove tasks that ended more than `retention_seconds` ago, at most `batch` per
        transaction and `batches` transactions per call; returns how many. Tasks that have
        not ended (waiting, running) are never removed, whatever their age."""
        cutoff = self._clock.now() - dt.timedelta(seconds=self.config.retention_seconds)
        terminal = [s.value for s in TaskStatus if s.terminal]
        old = (
            sa.select(tasks.c.seq)
            .where(tasks.c.ended_at < cutoff, tasks.c.status.in_(terminal))
            .order_by(tasks.c.ended_at)
            .limit(batch)
        )
        with self._reader.begin() as conn:
            if conn.execute(old.limit(1)).first() is None:
                return 0
        if self.is_postgres:
            old = old.with_for_update(skip_locked=True)
        removed = 0
        for _ in range(batches):
            with self._engine.begin() as conn:
                gone = int(conn.execute(tasks.delete().where(tasks.c.seq.in_(old))).rowcount)
            removed += gone
            if gone < batch:
                break
        return removed

    def forget(self, task_id: str) -> bool:
        """Remove a task that is waiting or ended (one whose answer its enqueuer has read);
        a running task is left to end (its group's count of running tasks must move)."""
        with self._engine.begin() as conn:
            gone = conn.execute(
                tasks.delete().where(
                    tasks.c.id == task_id, tasks.c.status != TaskStatus.RUNNING.value
                )
            ).rowcount
        return bool(gone)
