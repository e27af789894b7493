"""All SQL of the task queue: enqueue, claim with admission control, leases, finish, reap, read.

Admission control: at most `limit(type)` tasks of one operation type run at once in one
project. The row of `task_queues` for (project, type) is the serialisation point and holds
the group's `running` count, changed only in the transactions that move a task into or out
of `running`. A claim locks a group row whose count is under the limit (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, which re-checks the count on the latest row version; SQLite runs the
whole claim in one `BEGIN IMMEDIATE` transaction), takes the group's oldest waiting task and
increments the count. Two workers can therefore never both take the last slot. Groups are
served in order of their last claim (never-claimed first), so one project's long queue cannot
delay another project's task beyond the next free slot.

The hot statements are built once, with bind parameters, so a claim costs a few round trips
and little Python.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from csbs import sqlreads
from csbs.domain import errors
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.paging import Page, PageRequest
from csbs.queue import wake
from csbs.queue.jobs import EnqueueRequest, Task, TaskFilter, TaskStatus, error_info
from csbs.queue.schema import task_queues, tasks
from csbs.sqlpaging import apply_page
from csbs.sqltypes import UTCDateTime

#: PostgreSQL channel on which enqueues and finishes wake idle workers.
CHANNEL = "csbs_tasks"
#: How many candidate groups one claim looks at before giving up (each needs a lock).
_CLAIM_TRIES = 8
_REAP_BATCH = 100

#: Hook run inside the transaction that changes a task's state (e.g. to move a backup's
#: status in the same commit). It receives the connection and the task as updated.
Hook = Callable[[sa.Connection, Task], None]

SORT_COLUMNS: Mapping[str, sa.ColumnElement[Any]] = {
    "created_at": tasks.c.created_at,
    "started_at": tasks.c.started_at,
    "ended_at": tasks.c.ended_at,
    "status": tasks.c.status,
    "operation_type": tasks.c.operation_type,
    "id": tasks.c.id,
}


@dataclasses.dataclass(frozen=True)
class _ClaimStatements:
    candidate: sa.Select[Any]
    take: sa.Executable
    count: sa.Update | None


@dataclasses.dataclass(frozen=True)
class QueueConfig:
    """Limits and timings of the queue, from settings."""

    #: Running tasks per project, by operation type.
    limits: Mapping[str, int] = dataclasses.field(default_factory=dict)
    default_limit: int = 10
    #: Seconds from first start to deadline, by operation type.
    deadlines: Mapping[str, float] = dataclasses.field(default_factory=dict)
    default_deadline: float = 24 * 3600.0
    lease_seconds: float = 30.0
    max_attempts: int = 5
    retry_base_delay: float = 2.0
    retry_max_delay: float = 300.0

    def limit_for(self, operation_type: str) -> int:
        return self.limits.get(operation_type, self.default_limit)

    def deadline_for(self, operation_type: str) -> float:
        return self.deadlines.get(operation_type, self.default_deadline)


def _status_is(status: TaskStatus) -> sa.ColumnElement[bool]:
    """`status = 'waiting'` with the value written into the SQL, not bound: PostgreSQL uses
    a partial index (`WHERE status = 'waiting'`) only when it can prove the predicate, which
    a generic plan of a prepared statement with `status = $1` cannot; after five runs
    psycopg prepares, and the planner may switch to a generic plan that walks every task."""
    return tasks.c.status == sa.literal_column(f"'{status.value}'", sa.String())


def _add_missing_group(
    insert: Callable[[sa.Table], Any],
    project: sa.ColumnElement[Any],
    operation_type: sa.ColumnElement[Any],
) -> Any:
    """INSERT the queue group row of (`project`, `operation_type`) unless it exists.

    A plain `INSERT ... ON CONFLICT DO NOTHING` waits for any open transaction that updated
    the existing row (a claim or a finish of the same group), and those go on to lock backup
    and policy rows the enqueuing transaction may hold: a deadlock. The NOT EXISTS reads
    without locking; only the very first enqueue of a group can still meet a concurrent one.
    """
    exists = (
        sa.select(task_queues.c.project_id)
        .where(
            task_queues.c.project_id == project,
            task_queues.c.operation_type == operation_type,
        )
        .exists()
    )
    return (
        insert(task_queues)
        .from_select(
            ["project_id", "operation_type", "running"],
            sa.select(project, operation_type, sa.literal(0, sa.Integer())).where(~exists),
        )
        .on_conflict_do_nothing()
    )


class Waker(Protocol):
    """Something `TaskStore.poke` wakes: a worker's event, or a worker process's pipe."""

    def set(self) -> None: ...


class TaskStore:
    """The queue's tables, handed an engine; safe to share between threads and processes."""

    def __init__(self, engine: sa.Engine, clock: Clock, config: QueueConfig) -> None:
        self._engine = engine
        self._reader = sqlreads.reader(engine)
        self._clock = clock
        self.config = config
        self.is_postgres = engine.dialect.name == "postgresql"
        self._claim_cache: dict[tuple[str | None, tuple[str, ...]], _ClaimStatements] = {}
        self._decrement = (
            task_queues.update()
            .where(
                task_queues.c.project_id == sa.bindparam("g_project"),
                task_queues.c.operation_type == sa.bindparam("g_type"),
            )
            .values(running=task_queues.c.running - 1)
        )
        self._finish_stmt, self._finish_decrement = self._build_finish()
        self._enqueue_stmt, self._enqueue_group = self._build_enqueue()
        self._local_wakers: list[Waker] = []
        self._wakers_lock = threading.Lock()
        #: SQLite: wakes workers of other processes (PostgreSQL's enqueues notify them).
        self._other_processes = wake.sender_for(engine)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    # -- waking workers in this process -----------------------------------------------------

    def add_local_waker(self, waker: Waker) -> None:
        with self._wakers_lock:
            self._local_wakers.append(waker)

    def remove_local_waker(self, waker: Waker) -> None:
        with self._wakers_lock:
            if waker in self._local_wakers:
                self._local_wakers.remove(waker)

    def poke(self) -> None:
        """Wake this process's idle workers, and on SQLite those of other processes on this
        machine (call after committing an enqueue)."""
        with self._wakers_lock:
            for event in self._local_wakers:
                event.set()
        if self._other_processes is not None:
            self._other_processes.send()

    def _notify(self, conn: sa.Connection, payload: str) -> None:
        if self.is_postgres:
            conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))

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
    EACH_COLUMNS = (
        "id",
        "project_id",
        "params",
        "provider_id",
        "checkpoint_id",
        "checkpoint_item_id",
        "plan_id",
        "resource_id",
        "resource_name",
    )

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
        b = sa.bindparam
        now = b("e_now", type_=UTCDateTime())
        each = rows.add_columns(
            sa.literal(operation_type, sa.String()),
            sa.literal(TaskStatus.WAITING.value, sa.String()),
            sa.literal(0, sa.Integer()),
            sa.literal({}, sa.JSON()),
            now,
            sa.literal(0, sa.Integer()),
            sa.literal(0, sa.Integer()),
            sa.literal(self.config.max_attempts, sa.Integer()),
            sa.literal(self.config.deadline_for(operation_type), sa.Float()),
            now,
            sa.literal(False, sa.Boolean()),
        )
        added = (
            tasks.insert()
            .from_select(
                [
                    *self.EACH_COLUMNS,
                    "operation_type",
                    "status",
                    "progress",
                    "extra_info",
                    "created_at",
                    "attempts",
                    "interruptions",
                    "max_attempts",
                    "deadline_seconds",
                    "not_before",
                    "cancel_requested",
                ],
                each,
            )
            .returning(tasks.c.project_id)
            .cte("added")
        )
        projects = sa.select(added.c.project_id).distinct().subquery("projects")
        groups = _add_missing_group(
            pg_dialect.insert, projects.c.project_id, sa.literal(operation_type, sa.String())
        ).cte("add_groups")
        notify = (
            sa.select(sa.func.pg_notify(CHANNEL, operation_type))
            .where(sa.exists(sa.select(added.c.project_id)))
            .scalar_subquery()
        )
        return [added, groups], notify

    def _build_enqueue(self) -> tuple[sa.Executable, sa.Executable | None]:
        """The enqueue statements, built once (a DELETE call enqueues on its hot path)."""
        b = sa.bindparam
        project = sa.cast(b("e_project"), sa.String())
        operation_type = sa.cast(b("e_type"), sa.String())
        add_task = tasks.insert().values(
            id=b("e_id"),
            project_id=b("e_project"),
            operation_type=b("e_type"),
            status=TaskStatus.WAITING.value,
            params=b("e_params", type_=sa.JSON()),
            provider_id=b("e_provider", type_=sa.String()),
            checkpoint_id=b("e_checkpoint", type_=sa.String()),
            checkpoint_item_id=b("e_item", type_=sa.String()),
            plan_id=b("e_plan", type_=sa.String()),
            restore_id=b("e_restore", type_=sa.String()),
            resource_id=b("e_resource", type_=sa.String()),
            resource_name=b("e_resource_name", type_=sa.String()),
            progress=0,
            extra_info=sa.literal({}, sa.JSON()),
            error_info=sa.null(),
            created_at=b("e_now", type_=UTCDateTime()),
            attempts=0,
            interruptions=0,
            max_attempts=b("e_max_attempts", type_=sa.Integer()),
            deadline_seconds=b("e_deadline", type_=sa.Float()),
            not_before=b("e_now", type_=UTCDateTime()),
            route=b("e_route", type_=sa.String()),
            cancel_requested=False,
        )
        if not self.is_postgres:
            add_group = _add_missing_group(sqlite_dialect.insert, project, operation_type)
            return add_task.returning(*tasks.c), add_group
        # PostgreSQL: one round trip for the group row, the task and the wake-up
        # (data-modifying CTEs run exactly once, whether or not the outer select reads them).
        add_group_cte = _add_missing_group(pg_dialect.insert, project, operation_type).cte(
            "add_group"
        )
        added = add_task.returning(*tasks.c).cte("added")
        notify = sa.func.pg_notify(CHANNEL, added.c.operation_type).label("notified")
        return sa.select(*added.c, notify).add_cte(add_group_cte), None

    def enqueue_one(self, request: EnqueueRequest) -> Task:
        """Enqueue in a transaction of its own."""
        with self._engine.begin() as conn:
            task = self.enqueue(conn, request)
        self.poke()
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
        stmts = self._statements(host, tuple(sorted(types)))
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

    def _eligible(self, host: str | None, now: Any) -> sa.ColumnElement[bool]:
        route_ok = (
            tasks.c.route.is_(None)
            if host is None
            else sa.or_(tasks.c.route.is_(None), tasks.c.route == host)
        )
        return sa.and_(_status_is(TaskStatus.WAITING), route_ok, tasks.c.not_before <= now)

    def _statements(self, host: str | None, types: tuple[str, ...]) -> _ClaimStatements:
        key = (host, types)
        stmts = self._claim_cache.get(key)
        if stmts is None:
            stmts = self._build_claim_statements(host, types)
            self._claim_cache[key] = stmts
        return stmts

    def _build_claim_statements(self, host: str | None, types: tuple[str, ...]) -> _ClaimStatements:
        q = task_queues.c
        now = sa.bindparam("now", type_=UTCDateTime())
        limit = sa.case(
            {t: self.config.limit_for(t) for t in types},
            value=q.operation_type,
            else_=self.config.default_limit,
        )
        # "Has an eligible waiting task", written as the first such task's seq rather than
        # EXISTS: as a correlated scalar subquery PostgreSQL always runs it as an index probe
        # on (project_id, operation_type, seq), even before the table has statistics (an
        # EXISTS semi-join planned on empty statistics scanned every waiting task per group).
        first_waiting = (
            sa.select(tasks.c.seq)
            .where(
                tasks.c.project_id == q.project_id,
                tasks.c.operation_type == q.operation_type,
                self._eligible(host, now),
            )
            .order_by(tasks.c.seq)
            .limit(1)
            .scalar_subquery()
        )
        candidate = (
            sa.select(q.project_id, q.operation_type)
            .where(
                q.operation_type.in_(list(types)),
                q.running < limit,
                first_waiting.is_not(None),
                sa.tuple_(q.project_id, q.operation_type).not_in(
                    sa.bindparam("skipped", expanding=True)
                ),
            )
            .order_by(q.last_claim_at.asc().nulls_first(), q.project_id, q.operation_type)
            .limit(1)
        )
        if self.is_postgres:
            candidate = candidate.with_for_update(skip_locked=True, of=task_queues)
        group_project = sa.bindparam("g_project", type_=sa.String())
        group_type = sa.bindparam("g_type", type_=sa.String())
        pick = (
            sa.select(tasks.c.id)
            .where(
                tasks.c.project_id == group_project,
                tasks.c.operation_type == group_type,
                self._eligible(host, now),
            )
            .order_by(tasks.c.seq)
            .limit(1)
        )
        if self.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        take = (
            tasks.update()
            .where(tasks.c.id == pick.scalar_subquery())
            .values(
                status=TaskStatus.RUNNING.value,
                attempts=tasks.c.attempts + 1,
                lease_owner=sa.bindparam("b_worker", type_=sa.String()),
                lease_expires_at=sa.bindparam("b_lease_until", type_=UTCDateTime()),
                started_at=sa.func.coalesce(tasks.c.started_at, now),
                cancel_requested=False,
            )
            .returning(*tasks.c)
        )
        count = (
            task_queues.update()
            .where(q.project_id == group_project, q.operation_type == group_type)
            .values(running=q.running + 1, last_claim_at=now)
        )
        if not self.is_postgres:
            return _ClaimStatements(candidate=candidate, take=take, count=count)
        # PostgreSQL: one round trip takes the task and counts it (a data-modifying CTE
        # runs exactly once; the count only moves when a task was taken).
        taken = take.cte("taken")
        counted = count.where(sa.exists(sa.select(taken.c.id))).cte("counted")
        return _ClaimStatements(
            candidate=candidate,
            take=sa.select(*taken.c).add_cte(counted),
            count=None,
        )

    def _build_finish(self) -> tuple[sa.Executable, sa.Update | None]:
        """The finish statement, built once: it is the hottest write of the queue."""
        change = (
            tasks.update()
            .where(
                tasks.c.id == sa.bindparam("f_id"),
                tasks.c.lease_owner == sa.bindparam("f_owner"),
                tasks.c.attempts == sa.bindparam("f_attempts"),
                tasks.c.status == TaskStatus.RUNNING.value,
            )
            .values(
                status=sa.bindparam("f_status"),
                ended_at=sa.bindparam("f_now", type_=UTCDateTime()),
                lease_owner=None,
                lease_expires_at=None,
                error_info=sa.bindparam("f_error", type_=sa.JSON(none_as_null=True)),
                progress=sa.bindparam("f_progress"),
                extra_info=sa.bindparam("f_extra", type_=sa.JSON()),
            )
            .returning(*tasks.c)
        )
        if not self.is_postgres:
            return change, self._decrement
        done = change.cte("done")
        dec = self._decrement.where(sa.exists(sa.select(done.c.id))).cte("dec")
        notify = sa.func.pg_notify(CHANNEL, done.c.operation_type).label("notified")
        return sa.select(*done.c, notify).add_cte(dec), None

    def _leave_running(self, conn: sa.Connection, task: Task) -> None:
        """The group of `task` has one fewer running task (same transaction as the change)."""
        conn.execute(self._decrement, {"g_project": task.project_id, "g_type": task.operation_type})

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
        self.poke()
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
            self._notify(conn, task.operation_type)
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
            for row in rows:
                self._leave_running(conn, Task.from_row(row))
            self._notify(conn, "hand_back")
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
        with self._engine.begin() as conn:
            stmt = (
                sa.select(*tasks.c)
                .where(
                    _status_is(TaskStatus.RUNNING),
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
                if new.status.terminal and on_end is not None:
                    hook = on_end(new.operation_type)
                    if hook is not None:
                        hook(conn, new)
            if done:
                self._notify(conn, "reap")
        return done

    # -- reads ------------------------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        with self._reader.begin() as conn:
            row = conn.execute(sa.select(*tasks.c).where(tasks.c.id == task_id)).first()
        return Task.from_row(row) if row else None

    def search(self, task_filter: TaskFilter, page: PageRequest) -> Page[Task]:
        """A page of tasks matching `task_filter`, in the page's sort order."""
        stmt = sa.select(*tasks.c).where(*self._where(task_filter))
        with self._reader.begin() as conn:
            marker_values = None
            if page.marker is not None:
                marker_row = conn.execute(
                    sa.select(*[SORT_COLUMNS[k.key] for k in page.sort], tasks.c.seq).where(
                        tasks.c.id == page.marker, *self._where(task_filter)
                    )
                ).first()
                marker_values = list(marker_row) if marker_row else None
            stmt = apply_page(
                stmt,
                page,
                columns=SORT_COLUMNS,
                tiebreak=tasks.c.seq,
                marker_values=marker_values,
                not_found=errors.InvalidInput(f"marker {page.marker} is not a task of this list"),
            )
            rows = conn.execute(stmt).all()
        items = [Task.from_row(r) for r in rows[: page.limit]]
        return Page(items=items, has_more=len(rows) > page.limit)

    def count(self, task_filter: TaskFilter) -> int:
        with self._reader.begin() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(tasks).where(*self._where(task_filter))
                ).scalar_one()
            )

    def queue_positions(self, project_id: str) -> dict[str, int]:
        """Waiting task id -> 1-based position in its (project, type) queue."""
        position = sa.func.row_number().over(
            partition_by=tasks.c.operation_type, order_by=tasks.c.seq
        )
        with self._reader.begin() as conn:
            rows = conn.execute(
                sa.select(tasks.c.id, position).where(
                    tasks.c.project_id == project_id,
                    _status_is(TaskStatus.WAITING),
                )
            )
            return {task_id: int(pos) for task_id, pos in rows}

    @staticmethod
    def _where(f: TaskFilter) -> list[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = []
        for column, value in (
            (tasks.c.project_id, f.project_id),
            (tasks.c.operation_type, f.operation_type),
            (tasks.c.status, f.status.value if f.status else None),
            (tasks.c.checkpoint_id, f.checkpoint_id),
            (tasks.c.checkpoint_item_id, f.checkpoint_item_id),
            (tasks.c.plan_id, f.plan_id),
            (tasks.c.resource_id, f.resource_id),
        ):
            if value is not None:
                conds.append(column == value)
        if f.created_from is not None:
            conds.append(tasks.c.created_at >= f.created_from)
        if f.created_to is not None:
            conds.append(tasks.c.created_at <= f.created_to)
        return conds
