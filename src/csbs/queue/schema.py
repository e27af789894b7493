"""Tables of the task queue. The queue owns them; the migrations create them."""

from __future__ import annotations

import sqlalchemy as sa

from csbs.sql.types import UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: One row per task; these rows are the operation logs the API shows.
tasks = sa.Table(
    "tasks",
    metadata,
    # FIFO order: an integer that grows with every enqueue, on both engines.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("project_id", sa.String(64), nullable=False),
    sa.Column("operation_type", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("provider_id", sa.String(64), nullable=True),
    sa.Column("checkpoint_id", sa.String(64), nullable=True, index=True),
    sa.Column("checkpoint_item_id", sa.String(64), nullable=True, index=True),
    sa.Column("plan_id", sa.String(64), nullable=True),
    sa.Column("restore_id", sa.String(64), nullable=True),
    sa.Column("resource_id", sa.String(64), nullable=True),
    sa.Column("resource_name", sa.String(255), nullable=True),
    sa.Column("progress", sa.Integer, nullable=False, default=0),
    sa.Column("extra_info", sa.JSON, nullable=False),
    sa.Column("error_info", sa.JSON, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    # Attempts that ended through no fault of the task (its worker or the database was
    # lost): they do not count toward max_attempts; the deadline bounds them.
    sa.Column("interruptions", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("deadline_seconds", sa.Float, nullable=False),
    sa.Column("not_before", UTCDateTime, nullable=False),
    # NULL: any worker; otherwise only a worker started with this host name.
    sa.Column("route", sa.String(255), nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    # Partial indexes: claims look only at waiting tasks, the reaper only at running ones, so
    # the planner cannot wander into the (much larger) set of finished tasks.
    # The route is in the claim's index: a claim probes the tasks routed to no host and
    # those routed to its own host, each in queue order, and never walks another host's
    # backlog (`statements.claim`).
    sa.Index(
        "ix_tasks_waiting_route",
        "project_id",
        "operation_type",
        "route",
        "seq",
        postgresql_where=sa.text("status = 'waiting'"),
        sqlite_where=sa.text("status = 'waiting'"),
    ),
    sa.Index(
        "ix_tasks_running_lease",
        "lease_expires_at",
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    ),
    sa.Index("ix_tasks_project_created", "project_id", "created_at"),
    # Pruning finds ended tasks by age (`TaskLifecycle.prune`).
    sa.Index("ix_tasks_ended_at", "ended_at"),
)

#: One row per (project, operation type) that ever had a task: the per-project
#: serialisation point for admission (row lock), the number of its tasks running now, and
#: the fairness clock (last claim). `running` changes only in the transactions that move a
#: task into or out of `running`, so it always equals the count of such tasks.
task_queues = sa.Table(
    "task_queues",
    metadata,
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("operation_type", sa.String(32), primary_key=True),
    sa.Column("running", sa.Integer, nullable=False, default=0),
    sa.Column("last_claim_at", UTCDateTime, nullable=True),
)


#: One row per worker process: registered when it starts, its heartbeat renewed while it
#: runs, removed when it stops cleanly. A row whose heartbeat is older than the deployment's
#: `worker_stale_seconds` is a worker that died (its host may have no live worker).
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False, index=True),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("running", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
)
