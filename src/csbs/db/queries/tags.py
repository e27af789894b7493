"""SQL for tags, generic over the kind of tagged resource (backups, policies).

A binding names, per `TagKind`, the tag table (owner id, key, value) and the owner table (id,
project, name, creation time, and which rows are live). Everything else is shared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db import tables
from csbs.domain.backups import BackupStatus, Tag
from csbs.domain.tags import FUZZY_PREFIX, KeyValues, ProjectTag, TagKind, TagQuery


@dataclasses.dataclass(frozen=True)
class _Binding:
    tags: sa.Table
    #: the tag table's column holding the owner's id
    owner_id: sa.Column[Any]
    owner: sa.Table
    #: conditions on `owner` that make a row visible (e.g. not a deleted backup)
    live: tuple[sa.ColumnElement[bool], ...] = ()


def _table(cls: type[tables.Base]) -> sa.Table:
    return cast(sa.Table, cls.__table__)


_BACKUP_TAGS = _table(tables.BackupTag)
_POLICY_TAGS = _table(tables.PolicyTag)
_BACKUPS = _table(tables.Backup)
_POLICIES = _table(tables.Policy)

_BINDINGS: dict[TagKind, _Binding] = {
    TagKind.BACKUP: _Binding(
        tags=_BACKUP_TAGS,
        owner_id=_BACKUP_TAGS.c.backup_id,
        owner=_BACKUPS,
        live=(_BACKUPS.c.status != BackupStatus.DELETED.value,),
    ),
    TagKind.POLICY: _Binding(tags=_POLICY_TAGS, owner_id=_POLICY_TAGS.c.policy_id, owner=_POLICIES),
}


def owner_exists(
    s: orm.Session, kind: TagKind, project_id: str, resource_id: str, *, for_update: bool = False
) -> bool:
    """Whether the resource exists in the project (locked when `for_update`)."""
    b = _BINDINGS[kind]
    o = b.owner.c
    stmt = sa.select(o.id).where(o.id == resource_id, o.project_id == project_id, *b.live)
    if for_update:
        stmt = stmt.with_for_update()
    return s.execute(stmt).first() is not None


def tags_of(s: orm.Session, kind: TagKind, resource_ids: Sequence[str]) -> dict[str, list[Tag]]:
    """The tags of each resource, by key."""
    b = _BINDINGS[kind]
    out: dict[str, list[Tag]] = {i: [] for i in resource_ids}
    if resource_ids:
        rows = s.execute(
            sa.select(b.owner_id, b.tags.c.key, b.tags.c.value)
            .where(b.owner_id.in_(list(resource_ids)))
            .order_by(b.owner_id, b.tags.c.key)
        )
        for owner_id, key, value in rows:
            out[owner_id].append(Tag(key, value))
    return out


def put(
    s: orm.Session,
    kind: TagKind,
    resource_id: str,
    tags: Sequence[Tag],
    existing: Collection[str],
) -> None:
    """Add tags; a key in `existing` (the resource's keys, read by the caller in this
    transaction) gets the new value."""
    b = _BINDINGS[kind]
    for t in tags:
        if t.key in existing:
            s.execute(
                sa.update(b.tags)
                .where(b.owner_id == resource_id, b.tags.c.key == t.key)
                .values(value=t.value)
            )
        else:
            s.execute(
                sa.insert(b.tags).values(
                    {b.owner_id.name: resource_id, "key": t.key, "value": t.value}
                )
            )


def delete(s: orm.Session, kind: TagKind, resource_id: str, key: str, value: str | None) -> bool:
    """Delete the tag `key` (only if it has `value`, when given); whether one was there."""
    b = _BINDINGS[kind]
    conds = [b.owner_id == resource_id, b.tags.c.key == key]
    if value is not None:
        conds.append(b.tags.c.value == value)
    result = s.execute(sa.delete(b.tags).where(*conds))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def project_tags(s: orm.Session, kind: TagKind, project_id: str) -> list[ProjectTag]:
    """Every key used by the project's live resources, with its distinct values."""
    b = _BINDINGS[kind]
    o = b.owner.c
    rows = s.execute(
        sa.select(b.tags.c.key, b.tags.c.value)
        .join(b.owner, o.id == b.owner_id)
        .where(o.project_id == project_id, *b.live)
        .distinct()
        .order_by(b.tags.c.key, b.tags.c.value)
    )
    values: dict[str, list[str]] = {}
    for key, value in rows:
        values.setdefault(key, []).append(value)
    return [ProjectTag(k, tuple(v)) for k, v in values.items()]


def _contains(column: sa.ColumnElement[str], text: str) -> sa.ColumnElement[bool]:
    """Case-insensitive substring match, the same on SQLite and PostgreSQL; `%` and `_` in
    `text` are literal (autoescape)."""
    return sa.func.lower(column).contains(text.lower(), autoescape=True)


def _term(b: _Binding, kv: KeyValues) -> sa.ColumnElement[bool]:
    """The owner has tag `kv.key` with one of `kv.values` (any value when there are none)."""
    conds: list[sa.ColumnElement[bool]] = [b.owner_id == b.owner.c.id, b.tags.c.key == kv.key]
    if kv.values:
        conds.append(
            sa.or_(
                *[
                    _contains(b.tags.c.value, v[len(FUZZY_PREFIX) :])
                    if v.startswith(FUZZY_PREFIX)
                    else b.tags.c.value == v
                    for v in kv.values
                ]
            )
        )
    return sa.exists(sa.select(b.tags.c.key).where(*conds))


def _where(b: _Binding, project_id: str, q: TagQuery) -> list[sa.ColumnElement[bool]]:
    o = b.owner.c
    conds: list[sa.ColumnElement[bool]] = [o.project_id == project_id, *b.live]
    conds.extend(_term(b, kv) for kv in q.tags)
    if q.tags_any:
        conds.append(sa.or_(*[_term(b, kv) for kv in q.tags_any]))
    if q.not_tags:
        conds.append(sa.not_(sa.and_(*[_term(b, kv) for kv in q.not_tags])))
    conds.extend(sa.not_(_term(b, kv)) for kv in q.not_tags_any)
    if q.name is not None:
        conds.append(o.name == "" if q.name == "" else _contains(o.name, q.name))
    return conds


def count(s: orm.Session, kind: TagKind, project_id: str, q: TagQuery) -> int:
    b = _BINDINGS[kind]
    stmt = sa.select(sa.func.count()).select_from(b.owner).where(*_where(b, project_id, q))
    return int(s.execute(stmt).scalar_one())


def find(s: orm.Session, kind: TagKind, project_id: str, q: TagQuery) -> list[tuple[str, str]]:
    """(id, name) of one page of matching resources, newest first."""
    b = _BINDINGS[kind]
    o = b.owner.c
    stmt = (
        sa.select(o.id, o.name)
        .where(*_where(b, project_id, q))
        .order_by(o.created_at.desc(), o.id)
        .limit(q.limit)
        .offset(q.offset)
    )
    return [(str(i), str(n)) for i, n in s.execute(stmt)]
