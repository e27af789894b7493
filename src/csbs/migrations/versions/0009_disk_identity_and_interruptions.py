"""disk identity, hard links allowed per server, task interruptions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("disks") as batch:
        batch.add_column(sa.Column("identity", sa.String(length=64), nullable=True))
    with op.batch_alter_table("servers") as batch:
        batch.add_column(
            sa.Column("allow_hardlinks", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("interruptions", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("interruptions")
    with op.batch_alter_table("servers") as batch:
        batch.drop_column("allow_hardlinks")
    with op.batch_alter_table("disks") as batch:
        batch.drop_column("identity")
