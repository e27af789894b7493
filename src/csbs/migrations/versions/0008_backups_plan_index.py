"""index backups by policy

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 13:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_backups_plan_status", "backups", ["plan_id", "status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_backups_plan_status", table_name="backups")
