"""tree chunk ids: the leaf of a project's chunk-id tree (NULL: whole-chunk ids)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 03:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing projects keep their ids (NULL): their chunks are stored under them.
    with op.batch_alter_table("repo_projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chunk_id_leaf", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repo_projects", schema=None) as batch_op:
        batch_op.drop_column("chunk_id_leaf")
