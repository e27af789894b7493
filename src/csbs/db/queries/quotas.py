"""SQL for per-project quotas."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import orm

from csbs.db import tables

Q = tables.ProjectQuota


def get(s: orm.Session, project_id: str) -> tuple[int | None, int | None]:
    """The project's own (backups, capacity_gb); None where the default applies."""
    row = s.get(Q, project_id)
    return (None, None) if row is None else (row.backups, row.capacity_gb)


def put(
    s: orm.Session,
    project_id: str,
    now: dt.datetime,
    *,
    backups: int | None,
    capacity_gb: int | None,
) -> None:
    """Set the project's quotas; None leaves that one as it is."""
    row = s.get(Q, project_id, with_for_update=True)
    if row is None:
        s.add(Q(project_id=project_id, backups=backups, capacity_gb=capacity_gb, updated_at=now))
    else:
        if backups is not None:
            row.backups = backups
        if capacity_gb is not None:
            row.capacity_gb = capacity_gb
        row.updated_at = now
    s.flush()
