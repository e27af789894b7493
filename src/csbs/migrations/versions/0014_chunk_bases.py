"""delta chunks: the base a chunk's blob stands on, and the chain's depth

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 00:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repo_chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("base_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("depth", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("repo_chunks", schema=None) as batch_op:
        batch_op.drop_column("depth")
        batch_op.drop_column("base_id")
