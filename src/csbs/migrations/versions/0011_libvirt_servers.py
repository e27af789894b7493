"""libvirt domains as servers: source, Nova owner, unassigned servers, disk targets

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="manual")
        )
        batch.add_column(sa.Column("nova_project", sa.String(length=64), nullable=True))
        batch.alter_column("project_id", existing_type=sa.String(length=64), nullable=True)
    with op.batch_alter_table("disks") as batch:
        batch.add_column(sa.Column("target", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("format", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("source", sa.String(length=4096), nullable=True))
        batch.add_column(sa.Column("unsupported", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("disks") as batch:
        for column in ("unsupported", "source", "kind", "format", "target"):
            batch.drop_column(column)
    op.execute("DELETE FROM servers WHERE project_id IS NULL")
    with op.batch_alter_table("servers") as batch:
        batch.alter_column("project_id", existing_type=sa.String(length=64), nullable=False)
        batch.drop_column("nova_project")
        batch.drop_column("source")
