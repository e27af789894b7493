"""SQL for per-project quotas and the number of backups a project retains."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db import tables
from csbs.domain.backups import BackupStatus

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


def project_exists(s: orm.Session, project_id: str) -> bool:
    return s.get(tables.Project, project_id) is not None


def lock_project(s: orm.Session, project_id: str) -> None:
    """Serialise backup creations of one project, so two cannot both take the last slot."""
    s.execute(sa.select(tables.Project.id).where(tables.Project.id == project_id).with_for_update())


def count_backups(s: orm.Session, project_id: str) -> int:
    """Backups the project retains: every row, whatever its status, until it is deleted."""
    return int(
        s.execute(
            sa.select(sa.func.count())
            .select_from(tables.Backup)
            .where(
                tables.Backup.project_id == project_id,
                tables.Backup.status != BackupStatus.DELETED.value,
            )
        ).scalar_one()
    )
