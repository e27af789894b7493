"""Schema migrations (Alembic) for every table of the metadata database."""

from __future__ import annotations

from csbs.migrations.runner import current_revision, head_revision, target_metadata, upgrade

__all__ = ["current_revision", "head_revision", "target_metadata", "upgrade"]
