"""SQL for policies, their servers, tags and runs, and the scheduler's leadership lease."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db import tables
from csbs.db.queries.tags import tags_of
from csbs.domain.backups import BackupStatus
from csbs.domain.paging import Page, PageRequest
from csbs.domain.policies import (
    Policy,
    PolicyFilter,
    PolicyResource,
    PolicyRun,
    ScheduledOperation,
)
from csbs.domain.retention import Candidate
from csbs.domain.tags import TagKind
from csbs.sql.paging import fetch_page

P = tables.Policy
SORT_COLUMNS: Mapping[str, sa.ColumnElement[Any]] = {
    "created_at": P.__table__.c.created_at,
    "updated_at": P.__table__.c.updated_at,
    "name": P.__table__.c.name,
    "id": P.__table__.c.id,
}


def _assemble(s: orm.Session, rows: Sequence[tables.Policy]) -> list[Policy]:
    ids = [r.id for r in rows]
    resources: dict[str, list[tables.PolicyResource]] = {i: [] for i in ids}
    if ids:
        for r in s.scalars(
            sa.select(tables.PolicyResource).where(tables.PolicyResource.policy_id.in_(ids))
        ):
            resources[r.policy_id].append(r)
    tags = tags_of(s, TagKind.POLICY, ids)
    return [
        Policy(
            id=r.id,
            project_id=r.project_id,
            name=r.name,
            description=r.description,
            provider_id=r.provider_id,
            parameters=dict(r.parameters),
            status=r.status,
            created_at=r.created_at,
            updated_at=r.updated_at,
            resources=tuple(
                PolicyResource(id=x.server_id, name=x.name, extra_info=dict(x.extra_info))
                for x in sorted(resources[r.id], key=lambda x: x.position)
            ),
            operation=ScheduledOperation(
                id=r.operation_id,
                name=r.operation_name,
                description=r.operation_description,
                enabled=r.enabled,
                trigger_id=r.trigger_id,
                pattern=r.pattern,
                timezone=r.timezone,
                definition=dict(r.definition),
            ),
            tags=tuple(tags[r.id]),
            next_run_at=r.next_run_at,
        )
        for r in rows
    ]


def get(s: orm.Session, policy_id: str, *, for_update: bool = False) -> Policy | None:
    stmt = sa.select(P).where(P.id == policy_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = s.scalars(stmt).one_or_none()
    return _assemble(s, [row])[0] if row else None


def count_in_project(s: orm.Session, project_id: str) -> int:
    return int(
        s.execute(
            sa.select(sa.func.count()).select_from(P).where(P.project_id == project_id)
        ).scalar_one()
    )


def name_taken(s: orm.Session, project_id: str, name: str, except_id: str | None) -> bool:
    stmt = sa.select(P.id).where(P.project_id == project_id, P.name == name)
    if except_id is not None:
        stmt = stmt.where(P.id != except_id)
    return s.execute(stmt.limit(1)).first() is not None


def policies_of_servers(s: orm.Session, server_ids: Sequence[str]) -> dict[str, str]:
    """server id -> id of the policy it belongs to, for those that belong to one."""
    if not server_ids:
        return {}
    rows = s.execute(
        sa.select(tables.PolicyResource.server_id, tables.PolicyResource.policy_id).where(
            tables.PolicyResource.server_id.in_(list(server_ids))
        )
    )
    return {str(server_id): str(policy_id) for server_id, policy_id in rows}


def _columns(p: Policy) -> dict[str, Any]:
    return {
        "project_id": p.project_id,
        "name": p.name,
        "description": p.description,
        "provider_id": p.provider_id,
        "parameters": dict(p.parameters),
        "status": p.status,
        "operation_id": p.operation.id,
        "operation_name": p.operation.name,
        "operation_description": p.operation.description,
        "enabled": p.operation.enabled,
        "trigger_id": p.operation.trigger_id,
        "pattern": p.operation.pattern,
        "timezone": p.operation.timezone,
        "definition": dict(p.operation.definition),
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "next_run_at": p.next_run_at,
    }


def _resources(s: orm.Session, p: Policy) -> None:
    """Write the policy's servers (replacing any it had). Its tags are written by `add` and
    changed only through the tag API (`db/queries/tags.py`)."""
    s.execute(sa.delete(tables.PolicyResource).where(tables.PolicyResource.policy_id == p.id))
    s.flush()
    for i, r in enumerate(p.resources):
        s.add(
            tables.PolicyResource(
                policy_id=p.id,
                server_id=r.id,
                position=i,
                name=r.name,
                extra_info=dict(r.extra_info),
            )
        )
    s.flush()


def add(s: orm.Session, p: Policy) -> None:
    s.add(P(id=p.id, **_columns(p)))
    s.flush()
    for t in p.tags:
        s.add(tables.PolicyTag(policy_id=p.id, key=t.key, value=t.value))
    _resources(s, p)


def replace(s: orm.Session, p: Policy) -> None:
    """Update the policy's row and servers; its tags stay as they are."""
    s.execute(sa.update(P).where(P.id == p.id).values(**_columns(p)))
    _resources(s, p)


def delete(s: orm.Session, policy_id: str) -> None:
    s.execute(sa.delete(P).where(P.id == policy_id))


def _where(f: PolicyFilter) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if f.project_id is not None:
        conds.append(P.project_id == f.project_id)
    if f.name is not None:
        conds.append(P.name == f.name)
    if f.description is not None:
        conds.append(P.description == f.description)
    if f.enabled is not None:
        conds.append(P.enabled.is_(f.enabled))
    return conds


def search(s: orm.Session, f: PolicyFilter, page: PageRequest) -> Page[Policy]:
    rows, more = fetch_page(
        s, P, _where(f), page, columns=SORT_COLUMNS, tiebreak=P.__table__.c.id, noun="policy"
    )
    return Page(items=_assemble(s, rows), has_more=more)


# -- scheduling ------------------------------------------------------------------------------


def due(s: orm.Session, now: dt.datetime, limit: int) -> list[tuple[str, dt.datetime]]:
    """(policy id, due time) of enabled policies whose next run is at or before `now`."""
    rows = s.execute(
        sa.select(P.id, P.next_run_at)
        .where(P.next_run_at.is_not(None), P.next_run_at <= now)
        .order_by(P.next_run_at, P.id)
        .limit(limit)
    )
    return [(pid, at) for pid, at in rows if at is not None]  # (narrows the type)


def advance(
    s: orm.Session, policy_id: str, expected: dt.datetime, next_run_at: dt.datetime | None
) -> bool:
    """Move the next run from `expected` on; False when another scheduler did it first."""
    result = s.execute(
        sa.update(P)
        .where(P.id == policy_id, P.next_run_at == expected)
        .values(next_run_at=next_run_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_run(s: orm.Session, run: PolicyRun) -> None:
    s.add(
        tables.PolicyRun(
            id=run.id,
            policy_id=run.policy_id,
            project_id=run.project_id,
            slot_at=run.slot_at,
            fired_at=run.fired_at,
            trigger=run.trigger,
            checkpoint_id=run.checkpoint_id,
            skipped=[dict(x) for x in run.skipped],
        )
    )
    s.flush()


def slot_fired(s: orm.Session, policy_id: str, slot_at: dt.datetime) -> bool:
    R = tables.PolicyRun
    stmt = sa.select(R.id).where(
        R.policy_id == policy_id, R.slot_at == slot_at, R.trigger == "schedule"
    )
    return s.execute(stmt.limit(1)).first() is not None


def runs(s: orm.Session, policy_id: str, limit: int) -> list[PolicyRun]:
    R = tables.PolicyRun
    rows = s.scalars(
        sa.select(R).where(R.policy_id == policy_id).order_by(R.fired_at.desc(), R.id).limit(limit)
    )
    return [
        PolicyRun(
            id=r.id,
            policy_id=r.policy_id,
            project_id=r.project_id,
            slot_at=r.slot_at,
            fired_at=r.fired_at,
            trigger=r.trigger,
            checkpoint_id=r.checkpoint_id,
            skipped=tuple(r.skipped),
        )
        for r in rows
    ]


def retention_candidates(s: orm.Session, policy_id: str) -> list[tuple[Candidate, str]]:
    """(candidate, server id) of the policy's available backups (manual backups never
    carry a policy's id)."""
    B = tables.Backup
    rows = s.execute(
        sa.select(B.id, B.created_at, B.resource_id).where(
            B.plan_id == policy_id, B.status == BackupStatus.AVAILABLE.value
        )
    )
    return [(Candidate(i, at), server_id) for i, at, server_id in rows]


# -- scheduler leadership --------------------------------------------------------------------


def take_lease(
    s: orm.Session, name: str, holder: str, now: dt.datetime, until: dt.datetime
) -> bool:
    """Become (or stay) the holder of `name` until `until`; False while another holds it."""
    L = tables.SchedulerLease
    result = s.execute(
        sa.update(L)
        .where(L.name == name, sa.or_(L.holder == holder, L.expires_at < now))
        .values(holder=holder, expires_at=until)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return True
    if s.execute(sa.select(L.name).where(L.name == name)).first() is not None:
        return False
    try:
        with s.begin_nested():
            s.add(L(name=name, holder=holder, expires_at=until))
    except sa.exc.IntegrityError:
        return False
    return True


def release_lease(s: orm.Session, name: str, holder: str) -> None:
    L = tables.SchedulerLease
    s.execute(sa.delete(L).where(L.name == name, L.holder == holder))
