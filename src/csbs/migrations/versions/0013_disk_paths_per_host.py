"""a disk path is unique on its host

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("disks") as batch:
        batch.add_column(
            sa.Column("host", sa.String(length=255), nullable=False, server_default="")
        )
    op.execute(
        "UPDATE disks SET host = COALESCE("
        "(SELECT servers.host FROM servers WHERE servers.id = disks.server_id), '')"
    )
    with op.batch_alter_table("disks") as batch:
        batch.drop_constraint("uq_disks_path", type_="unique")
        batch.create_unique_constraint("uq_disks_host_path", ["host", "path"])


def downgrade() -> None:
    with op.batch_alter_table("disks") as batch:
        batch.drop_constraint("uq_disks_host_path", type_="unique")
        batch.create_unique_constraint("uq_disks_path", ["path"])
        batch.drop_column("host")
