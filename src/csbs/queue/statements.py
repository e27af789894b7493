"""The task queue's statements, built once with bind parameters: a claim then costs a few
round trips and little Python, and so do an enqueue and a finish.

On PostgreSQL the writes that commit together are one statement: data-modifying CTEs run
exactly once, whether or not the outer select reads them. SQLite runs them one by one in
its transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from csbs.domain.operations import TaskStatus
from csbs.queue.config import QueueConfig
from csbs.queue.schema import task_queues, tasks
from csbs.sql import dialect
from csbs.sql.types import UTCDateTime

#: PostgreSQL channel on which the enqueues and finishes of tasks routed to no host wake
#: idle workers; every worker listens on it.
CHANNEL = "csbs_tasks"
#: Those of tasks routed to a host go to that host's channel only (`channel_for`): a
#: worker listens on the general channel and on its host's, so another host's backlog
#: never wakes it.
_HOST_DIGEST_CHARS = 16


def host_digest(host: str) -> str:
    """A short, fixed-length name of `host` for channel and socket names (md5: PostgreSQL
    computes the same in SQL)."""
    return hashlib.md5(host.encode(), usedforsecurity=False).hexdigest()[:_HOST_DIGEST_CHARS]


def channel_for(route: str | None) -> str:
    """The PostgreSQL channel that wakes the workers able to take a task of `route`."""
    return CHANNEL if route is None else f"{CHANNEL}_{host_digest(route)}"


def channel_of(route: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """`channel_for` in SQL, for statements that notify about the rows they change."""
    return sa.case(
        (route.is_(None), sa.literal(CHANNEL, sa.String())),
        else_=sa.literal(f"{CHANNEL}_", sa.String())
        + sa.func.substr(sa.func.md5(route), 1, _HOST_DIGEST_CHARS),
    )


def status_is(status: TaskStatus) -> sa.ColumnElement[bool]:
    """`status = 'waiting'` with the value written into the SQL, not bound: PostgreSQL uses
    a partial index (`WHERE status = 'waiting'`) only when it can prove the predicate, which
    a generic plan of a prepared statement with `status = $1` cannot; after five runs
    psycopg prepares, and the planner may switch to a generic plan that walks every task."""
    return tasks.c.status == sa.literal_column(f"'{status.value}'", sa.String())


def add_missing_group(
    insert: Callable[[sa.Table], dialect.Insert],
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


#: The group (`g_project`, `g_type`) has one fewer running task.
LEAVE_RUNNING = (
    task_queues.update()
    .where(
        task_queues.c.project_id == sa.bindparam("g_project"),
        task_queues.c.operation_type == sa.bindparam("g_type"),
    )
    .values(running=task_queues.c.running - 1)
)


def enqueue(
    insert: Callable[[sa.Table], dialect.Insert], is_postgres: bool
) -> tuple[sa.Executable, sa.Executable | None]:
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
    if not is_postgres:
        add_group = add_missing_group(insert, project, operation_type)
        return add_task.returning(*tasks.c), add_group
    # PostgreSQL: one round trip for the group row, the task and the wake-up
    # (data-modifying CTEs run exactly once, whether or not the outer select reads them).
    add_group_cte = add_missing_group(insert, project, operation_type).cte("add_group")
    added = add_task.returning(*tasks.c).cte("added")
    notify = sa.func.pg_notify(channel_of(added.c.route), added.c.operation_type).label("notified")
    return sa.select(*added.c, notify).add_cte(add_group_cte), None


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
    rows: sa.Select[Any],
    operation_type: str,
    config: QueueConfig,
    insert: Callable[[sa.Table], dialect.Insert],
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
        sa.literal(config.max_attempts, sa.Integer()),
        sa.literal(config.deadline_for(operation_type), sa.Float()),
        now,
        sa.literal(False, sa.Boolean()),
    )
    added = (
        tasks.insert()
        .from_select(
            [
                *EACH_COLUMNS,
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
    groups = add_missing_group(
        insert, projects.c.project_id, sa.literal(operation_type, sa.String())
    ).cte("add_groups")
    notify = (
        sa.select(sa.func.pg_notify(CHANNEL, operation_type))
        .where(sa.exists(sa.select(added.c.project_id)))
        .scalar_subquery()
    )
    return [added, groups], notify


@dataclasses.dataclass(frozen=True)
class ClaimStatements:
    candidate: sa.Select[Any]
    take: sa.Executable
    count: sa.Update | None


def _first_waiting(
    route: sa.ColumnElement[bool], project: Any, operation_type: Any, now: Any, column: Any
) -> sa.ScalarSelect[Any]:
    """`column` of the group's first waiting task with this route, as one probe of the
    index `ix_tasks_waiting_route` (project, type, route, seq): it reads no task routed
    elsewhere."""
    return (
        sa.select(column)
        .where(
            tasks.c.project_id == project,
            tasks.c.operation_type == operation_type,
            status_is(TaskStatus.WAITING),
            route,
            tasks.c.not_before <= now,
        )
        .order_by(tasks.c.seq)
        .limit(1)
        # Correlated to the group row of a claim's candidate, never to an outer `tasks`.
        .correlate_except(tasks)
        .scalar_subquery()
    )


def _routes(host: str | None) -> list[sa.ColumnElement[bool]]:
    """The routes a worker on `host` takes, each a probe of its own: tasks routed to no
    host, and those routed to `host`. (One `route IS NULL OR route = :host` would walk the
    group in queue order through every other host's waiting tasks.)"""
    if host is None:
        return [tasks.c.route.is_(None)]
    return [tasks.c.route.is_(None), tasks.c.route == sa.literal(host, sa.String())]


def claim(
    host: str | None, types: tuple[str, ...], config: QueueConfig, is_postgres: bool
) -> ClaimStatements:
    """The statements of a claim by a worker on `host` that runs `types`."""
    q = task_queues.c
    now = sa.bindparam("now", type_=UTCDateTime())
    limit = sa.case(
        {t: config.limit_for(t) for t in types},
        value=q.operation_type,
        else_=config.default_limit,
    )
    # "Has an eligible waiting task", written as the first such task's seq rather than
    # EXISTS: as a correlated scalar subquery PostgreSQL always runs it as an index probe
    # on (project_id, operation_type, route, seq), even before the table has statistics (an
    # EXISTS semi-join planned on empty statistics scanned every waiting task per group).
    has_waiting = sa.or_(
        *(
            _first_waiting(r, q.project_id, q.operation_type, now, tasks.c.seq).is_not(None)
            for r in _routes(host)
        )
    )
    candidate = (
        sa.select(q.project_id, q.operation_type)
        .where(
            q.operation_type.in_(list(types)),
            q.running < limit,
            has_waiting,
            sa.tuple_(q.project_id, q.operation_type).not_in(
                sa.bindparam("skipped", expanding=True)
            ),
        )
        .order_by(q.last_claim_at.asc().nulls_first(), q.project_id, q.operation_type)
        .limit(1)
    )
    if is_postgres:
        candidate = candidate.with_for_update(skip_locked=True, of=task_queues)
    group_project = sa.bindparam("g_project", type_=sa.String())
    group_type = sa.bindparam("g_type", type_=sa.String())
    # The first of each route's first task (a locked one is skipped for the other).
    firsts = [_first_waiting(r, group_project, group_type, now, tasks.c.id) for r in _routes(host)]
    pick = sa.select(tasks.c.id).where(tasks.c.id.in_(firsts)).order_by(tasks.c.seq).limit(1)
    if is_postgres:
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
    if not is_postgres:
        return ClaimStatements(candidate=candidate, take=take, count=count)
    # PostgreSQL: one round trip takes the task and counts it (a data-modifying CTE
    # runs exactly once; the count only moves when a task was taken).
    taken = take.cte("taken")
    counted = count.where(sa.exists(sa.select(taken.c.id))).cte("counted")
    return ClaimStatements(
        candidate=candidate,
        take=sa.select(*taken.c).add_cte(counted),
        count=None,
    )


def finish(is_postgres: bool) -> tuple[sa.Executable, sa.Update | None]:
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
    if not is_postgres:
        return change, LEAVE_RUNNING
    done = change.cte("done")
    dec = LEAVE_RUNNING.where(sa.exists(sa.select(done.c.id))).cte("dec")
    notify = sa.func.pg_notify(channel_of(done.c.route), done.c.operation_type).label("notified")
    return sa.select(*done.c, notify).add_cte(dec), None
