"""workers register; the claim's index holds the route; ended tasks by age

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 00:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from csbs.sql.types import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_WAITING = sa.text("status = 'waiting'")


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_index("ix_workers_host", "workers", ["host"])
    op.create_index(
        "ix_tasks_waiting_route",
        "tasks",
        ["project_id", "operation_type", "route", "seq"],
        postgresql_where=_WAITING,
        sqlite_where=_WAITING,
    )
    op.drop_index("ix_tasks_waiting", table_name="tasks")
    op.create_index("ix_tasks_ended_at", "tasks", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_ended_at", table_name="tasks")
    op.create_index(
        "ix_tasks_waiting",
        "tasks",
        ["project_id", "operation_type", "seq"],
        postgresql_where=_WAITING,
        sqlite_where=_WAITING,
    )
    op.drop_index("ix_tasks_waiting_route", table_name="tasks")
    op.drop_index("ix_workers_host", table_name="workers")
    op.drop_table("workers")
