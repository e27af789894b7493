"""SQL for restores."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db import tables
from csbs.domain.paging import Page, PageRequest
from csbs.domain.restores import Restore, RestoreFilter, RestoreStatus, VolumeMapping
from csbs.sql.paging import fetch_page

R = tables.Restore


def _restore(r: tables.Restore) -> Restore:
    return Restore(
        id=r.id,
        project_id=r.project_id,
        provider_id=r.provider_id,
        checkpoint_id=r.checkpoint_id,
        backup_id=r.backup_id,
        server_id=r.server_id,
        power_on=r.power_on,
        restore_target=r.restore_target,
        mappings=tuple(VolumeMapping(m["backup_id"], m["volume_id"]) for m in r.mappings),
        status=RestoreStatus(r.status),
        reason=r.reason,
        task_id=r.task_id,
        created_at=r.created_at,
        ended_at=r.ended_at,
    )


def add(s: orm.Session, r: Restore) -> None:
    s.add(
        R(
            id=r.id,
            project_id=r.project_id,
            provider_id=r.provider_id,
            checkpoint_id=r.checkpoint_id,
            backup_id=r.backup_id,
            server_id=r.server_id,
            power_on=r.power_on,
            restore_target=r.restore_target,
            mappings=[{"backup_id": m.backup_id, "volume_id": m.volume_id} for m in r.mappings],
            status=r.status.value,
            reason=r.reason,
            task_id=r.task_id,
            created_at=r.created_at,
            ended_at=r.ended_at,
        )
    )
    s.flush()


def get(s: orm.Session, restore_id: str) -> Restore | None:
    row = s.get(R, restore_id)
    return _restore(row) if row else None


SORT_COLUMNS: Mapping[str, sa.ColumnElement[Any]] = {
    "created_at": R.__table__.c.created_at,
    "ended_at": R.__table__.c.ended_at,
    "status": R.__table__.c.status,
    "id": R.__table__.c.id,
}


def search(s: orm.Session, f: RestoreFilter, page: PageRequest) -> Page[Restore]:
    c = R.__table__.c
    conds: list[sa.ColumnElement[bool]] = []
    if f.project_id is not None:
        conds.append(c.project_id == f.project_id)
    if f.status is not None:
        conds.append(c.status == f.status.value)
    rows, more = fetch_page(s, R, conds, page, columns=SORT_COLUMNS, tiebreak=c.id, noun="restore")
    return Page(items=[_restore(r) for r in rows], has_more=more)


def server_restoring(s: orm.Session, server_id: str) -> bool:
    return (
        s.execute(
            sa.select(R.id)
            .where(R.server_id == server_id, R.status == RestoreStatus.IN_PROGRESS.value)
            .limit(1)
        ).first()
        is not None
    )


def finish(
    s: orm.Session, restore_id: str, status: RestoreStatus, reason: str, now: dt.datetime
) -> None:
    s.execute(
        sa.update(R)
        .where(R.id == restore_id)
        .values(status=status.value, reason=reason, ended_at=now)
    )
