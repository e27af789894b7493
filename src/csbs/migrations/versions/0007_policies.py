"""policies, their servers, tags and runs; scheduler leadership

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import csbs.sql.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("operation_id", sa.String(length=36), nullable=False),
        sa.Column("operation_name", sa.String(length=255), nullable=False),
        sa.Column("operation_description", sa.String(length=255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("trigger_id", sa.String(length=36), nullable=False),
        sa.Column("pattern", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", csbs.sql.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", csbs.sql.types.UTCDateTime(), nullable=False),
        sa.Column("next_run_at", csbs.sql.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_policies_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sa.UniqueConstraint("project_id", "name", name="uq_policies_project_name"),
    )
    op.create_index(op.f("ix_policies_next_run_at"), "policies", ["next_run_at"], unique=False)
    op.create_table(
        "policy_resources",
        sa.Column("policy_id", sa.String(length=36), nullable=False),
        sa.Column("server_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("extra_info", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name=op.f("fk_policy_resources_policy_id_policies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_policy_resources_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("policy_id", "server_id", name=op.f("pk_policy_resources")),
        sa.UniqueConstraint("server_id", name=op.f("uq_policy_resources_server_id")),
    )
    op.create_table(
        "policy_tags",
        sa.Column("policy_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=127), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name=op.f("fk_policy_tags_policy_id_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("policy_id", "key", name=op.f("pk_policy_tags")),
    )
    op.create_table(
        "policy_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("policy_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("slot_at", csbs.sql.types.UTCDateTime(), nullable=False),
        sa.Column("fired_at", csbs.sql.types.UTCDateTime(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=36), nullable=True),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name=op.f("fk_policy_runs_policy_id_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_runs")),
        sa.UniqueConstraint("policy_id", "slot_at", "trigger", name="uq_policy_runs_slot"),
    )
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("expires_at", csbs.sql.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_leases")),
    )


def downgrade() -> None:
    op.drop_table("scheduler_leases")
    op.drop_table("policy_runs")
    op.drop_table("policy_tags")
    op.drop_table("policy_resources")
    op.drop_index(op.f("ix_policies_next_run_at"), table_name="policies")
    op.drop_table("policies")
