"""SQL for backup records, backups, disk backups and backup tags."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from csbs.db import tables
from csbs.domain.backups import (
    DELETABLE,
    Backup,
    BackupFilter,
    BackupRef,
    BackupStatus,
    Checkpoint,
    CheckpointFilter,
    DiskBackup,
    Tag,
    checkpoint_status,
)
from csbs.domain.paging import Page, PageRequest
from csbs.sql.paging import fetch_page
from csbs.sql.types import UTCDateTime

B = tables.Backup
SORT_COLUMNS: Mapping[str, sa.ColumnElement[Any]] = {
    "created_at": B.__table__.c.created_at,
    "updated_at": B.__table__.c.updated_at,
    "name": B.__table__.c.name,
    "status": B.__table__.c.status,
    "protected_at": B.__table__.c.protected_at,
    "id": B.__table__.c.id,
}


def _where(f: BackupFilter) -> list[sa.ColumnElement[bool]]:
    c = B.__table__.c
    conds: list[sa.ColumnElement[bool]] = []
    if f.impossible:
        conds.append(sa.false())
    if not f.include_deleted:
        conds.append(c.status != BackupStatus.DELETED.value)
    for col, value in (
        (c.project_id, f.project_id),
        (c.status, f.status),
        (c.resource_id, f.resource_id),
        (c.resource_type, f.resource_type),
        (c.checkpoint_id, f.checkpoint_id),
        (c.plan_id, f.plan_id),
    ):
        if value is not None:
            conds.append(col == value)
    if f.name:
        conds.append(c.name.contains(f.name, autoescape=True))
    if f.resource_name:
        conds.append(c.resource_name.contains(f.resource_name, autoescape=True))
    if f.created_from is not None:
        conds.append(c.created_at >= f.created_from)
    if f.created_to is not None:
        conds.append(c.created_at <= f.created_to)
    T = tables.BackupTag
    conds.extend(
        sa.exists(sa.select(T.key).where(T.backup_id == c.id, T.key == t.key, T.value == t.value))
        for t in f.tags
    )
    return conds


def _disk(row: tables.DiskBackup) -> DiskBackup:
    return DiskBackup(
        id=row.id,
        backup_id=row.backup_id,
        disk_id=row.disk_id,
        disk_name=row.disk_name,
        device_name=row.device_name,
        bootable=row.bootable,
        source_size=row.source_size,
        status=BackupStatus(row.status),
        logical_bytes=row.logical_bytes,
        stored_bytes=row.stored_bytes,
        new_bytes=row.new_bytes,
        reused_bytes=row.reused_bytes,
        incremental=row.incremental,
        seconds=row.seconds,
    )


def _assemble(s: orm.Session, rows: Sequence[tables.Backup]) -> list[Backup]:
    ids = [r.id for r in rows]
    disks: dict[str, list[tables.DiskBackup]] = {i: [] for i in ids}
    tags: dict[str, list[Tag]] = {i: [] for i in ids}
    if ids:
        for d in s.scalars(
            sa.select(tables.DiskBackup)
            .where(tables.DiskBackup.backup_id.in_(ids))
            .order_by(tables.DiskBackup.position)
        ):
            disks[d.backup_id].append(d)
        for t in s.scalars(
            sa.select(tables.BackupTag)
            .where(tables.BackupTag.backup_id.in_(ids))
            .order_by(tables.BackupTag.key)
        ):
            tags[t.backup_id].append(Tag(t.key, t.value))
    return [
        Backup(
            id=r.id,
            checkpoint_id=r.checkpoint_id,
            project_id=r.project_id,
            name=r.name,
            description=r.description,
            resource_id=r.resource_id,
            resource_name=r.resource_name,
            resource_type=r.resource_type,
            status=BackupStatus(r.status),
            created_at=r.created_at,
            updated_at=r.updated_at,
            protected_at=r.protected_at,
            finished_at=r.finished_at,
            plan_id=r.plan_id,
            auto_trigger=r.auto_trigger,
            incremental=r.incremental,
            progress=r.progress,
            consistency=r.consistency,
            fail_op=r.fail_op,
            fail_reason=r.fail_reason,
            fail_code=r.fail_code,
            task_id=r.task_id,
            extra=dict(r.extra or {}),
            tags=tuple(tags[r.id]),
            disks=tuple(_disk(d) for d in disks[r.id]),
        )
        for r in rows
    ]


def add_checkpoint(s: orm.Session, cp: Checkpoint) -> None:
    s.add(
        tables.Checkpoint(
            id=cp.id,
            project_id=cp.project_id,
            plan_id=cp.plan_id,
            plan_name=cp.plan_name,
            created_by=cp.created_by,
            created_at=cp.created_at,
        )
    )
    s.flush()


def add_backup(s: orm.Session, b: Backup) -> None:
    s.add(
        tables.Backup(
            id=b.id,
            checkpoint_id=b.checkpoint_id,
            project_id=b.project_id,
            name=b.name,
            description=b.description,
            resource_id=b.resource_id,
            resource_name=b.resource_name,
            resource_type=b.resource_type,
            status=b.status.value,
            created_at=b.created_at,
            updated_at=b.updated_at,
            protected_at=b.protected_at,
            finished_at=b.finished_at,
            plan_id=b.plan_id,
            auto_trigger=b.auto_trigger,
            incremental=b.incremental,
            progress=b.progress,
            consistency=b.consistency,
            fail_op=b.fail_op,
            fail_reason=b.fail_reason,
            fail_code=b.fail_code,
            task_id=b.task_id,
            extra=b.extra,
        )
    )
    s.flush()
    for i, d in enumerate(b.disks):
        s.add(
            tables.DiskBackup(
                id=d.id,
                backup_id=b.id,
                position=i,
                disk_id=d.disk_id,
                disk_name=d.disk_name,
                device_name=d.device_name,
                bootable=d.bootable,
                source_size=d.source_size,
                status=d.status.value,
                logical_bytes=d.logical_bytes,
                stored_bytes=d.stored_bytes,
                new_bytes=d.new_bytes,
                reused_bytes=d.reused_bytes,
                incremental=d.incremental,
                seconds=d.seconds,
            )
        )
    for t in b.tags:
        s.add(tables.BackupTag(backup_id=b.id, key=t.key, value=t.value))
    s.flush()


def get_backup(s: orm.Session, backup_id: str, *, for_update: bool = False) -> Backup | None:
    stmt = sa.select(B).where(B.id == backup_id, B.status != BackupStatus.DELETED.value)
    if for_update:
        stmt = stmt.with_for_update()
    row = s.scalars(stmt).one_or_none()
    return _assemble(s, [row])[0] if row else None


_RECORDED = sa.select(B.project_id, B.extra).where(
    B.id == sa.bindparam("g_id"), B.status != BackupStatus.DELETED.value
)


def project_and_extra(s: orm.Session, backup_id: str) -> tuple[str, Mapping[str, Any]] | None:
    """A live backup's project and `extra`, without its disks and tags (a prebuilt
    statement: every deletion task reads this)."""
    row = s.execute(_RECORDED, {"g_id": backup_id}).one_or_none()
    return (row.project_id, row.extra or {}) if row else None


def backups_by_ids(s: orm.Session, backup_ids: Sequence[str]) -> list[Backup]:
    """The live backups among `backup_ids`, in that order."""
    if not backup_ids:
        return []
    rows = {
        r.id: r
        for r in s.scalars(
            sa.select(B).where(B.id.in_(list(backup_ids)), B.status != BackupStatus.DELETED.value)
        )
    }
    return _assemble(s, [rows[i] for i in backup_ids if i in rows])


_BT: sa.Table = B.__table__  # type: ignore[assignment]
#: Built once: deleting is on the hot path of DELETE (Core statements: no ORM bookkeeping).
_REFS = sa.select(
    _BT.c.id,
    _BT.c.project_id,
    _BT.c.checkpoint_id,
    _BT.c.status,
    _BT.c.plan_id,
    _BT.c.resource_id,
    _BT.c.resource_name,
).where(_BT.c.status != BackupStatus.DELETED.value)
#: The columns of `_REFS`, by name (those of `BackupRef`).
_REF_COLUMNS = (
    "id",
    "project_id",
    "checkpoint_id",
    "status",
    "plan_id",
    "resource_id",
    "resource_name",
)
_REFS_OF_CHECKPOINT = (
    _REFS.where(_BT.c.checkpoint_id == sa.bindparam("r_checkpoint"))
    .order_by(_BT.c.created_at, _BT.c.id)
    .with_for_update()
)
_REFS_BY_ID = (
    _REFS.where(_BT.c.id.in_(sa.bindparam("r_ids", expanding=True)))
    .order_by(_BT.c.created_at, _BT.c.id)
    .with_for_update()
)
_MARK = (
    _BT.update()
    .where(_BT.c.id == sa.bindparam("m_id"))
    .values(
        status=sa.bindparam("m_status"),
        updated_at=sa.bindparam("m_now", type_=UTCDateTime()),
        task_id=sa.bindparam("m_task"),
    )
)


#: How the queue adds its tasks to a statement of ours (`TaskStore.enqueue_each`, bound to
#: an operation type): given a select of the task columns in the queue's `EACH_COLUMNS`
#: order, the data-modifying CTEs to add and a column that wakes the workers.
EnqueueEach = Callable[[sa.Select[Any]], tuple[list[sa.CTE], sa.ScalarSelect[Any]]]


def deletion_accept(enqueue_each: EnqueueEach, provider_id: str) -> sa.Select[Any]:
    """The DELETE call (B2) accepted in one PostgreSQL statement: one round trip instead
    of five (BEGIN, lock, mark, enqueue, COMMIT). Built once: it is the hot path of DELETE.

    Binds `r_checkpoint` (the record), `d_ids` (the targeted backup ids, or None for all of
    them), `d_project` (the caller's project), `d_now` and the queue's `e_now`. Answers the
    record's backups, locked, oldest first: the columns of `BackupRef`, `task_id` (of a
    targeted backup), `ok` and `notified`. Only when `ok` (the record is the project's,
    every id is in it, every target is deletable) did it write: the targets went
    `waiting_delete`, each with one deletion task. Data-modifying CTEs run once, whether or
    not the statement reads them.
    """
    locked = _REFS_OF_CHECKPOINT.add_columns(_BT.c.created_at).cte("locked")
    ids = sa.cast(sa.bindparam("d_ids"), pg.ARRAY(sa.String()))
    targets = (
        sa.select(*locked.c, sa.cast(sa.func.gen_random_uuid(), sa.String()).label("task_id"))
        .where(sa.or_(ids.is_(None), locked.c.id == sa.any_(ids)))
        .cte("targets")
    )
    deletable = sa.or_(*(targets.c.status == v for v in sorted(s.value for s in DELETABLE)))
    n_targets = sa.select(sa.func.count()).select_from(targets).scalar_subquery()
    verdict = sa.select(
        sa.and_(
            sa.exists(sa.select(locked.c.id)),
            ~sa.exists(
                sa.select(locked.c.id).where(locked.c.project_id != sa.bindparam("d_project"))
            ),
            sa.or_(ids.is_(None), n_targets == sa.func.cardinality(ids)),
            ~sa.exists(sa.select(targets.c.id).where(~deletable)),
        ).label("ok")
    ).cte("verdict")
    ok = sa.select(verdict.c.ok).scalar_subquery()
    marked = (
        _BT.update()
        .where(_BT.c.id == targets.c.id, ok)
        .values(
            status=BackupStatus.WAITING_DELETE.value,
            updated_at=sa.bindparam("d_now", type_=UTCDateTime()),
            task_id=targets.c.task_id,
        )
        .returning(_BT.c.id)
        .cte("marked")
    )
    # One task per target, in the order the ids were given in, else oldest first.
    tasks = (
        sa.select(
            targets.c.task_id,
            targets.c.project_id,
            sa.func.json_build_object("backup_id", targets.c.id, type_=sa.JSON()),
            sa.literal(provider_id, sa.String()),
            targets.c.checkpoint_id,
            targets.c.id,
            targets.c.plan_id,
            targets.c.resource_id,
            targets.c.resource_name,
        )
        .where(ok)
        .order_by(sa.func.array_position(ids, targets.c.id), targets.c.created_at, targets.c.id)
    )
    enqueued, notify = enqueue_each(tasks)
    return (
        sa.select(
            *(locked.c[name] for name in _REF_COLUMNS),
            targets.c.task_id,
            ok.label("ok"),
            notify.label("notified"),
        )
        .select_from(locked.outerjoin(targets, targets.c.id == locked.c.id))
        .order_by(locked.c.created_at, locked.c.id)
        .add_cte(marked, *enqueued)
    )


def refs_for_update(
    s: orm.Session, *, checkpoint_id: str | None = None, ids: Sequence[str] = ()
) -> list[BackupRef]:
    """The backups of a record (or with these ids), locked, oldest first: one statement."""
    conn = s.connection()
    if checkpoint_id is not None:
        rows = conn.execute(_REFS_OF_CHECKPOINT, {"r_checkpoint": checkpoint_id})
    else:
        rows = conn.execute(_REFS_BY_ID, {"r_ids": list(ids)})
    return [ref_of(r) for r in rows]


def ref_of(row: Any) -> BackupRef:
    """The BackupRef of a row with the columns of `_REFS`."""
    return BackupRef(
        id=row.id,
        project_id=row.project_id,
        checkpoint_id=row.checkpoint_id,
        status=BackupStatus(row.status),
        plan_id=row.plan_id,
        resource_id=row.resource_id,
        resource_name=row.resource_name,
    )


def mark(
    s: orm.Session, backup_id: str, status: BackupStatus, now: dt.datetime, task_id: str
) -> None:
    """A backup's new status and the task that now works on it (a prebuilt statement)."""
    s.connection().execute(
        _MARK, {"m_id": backup_id, "m_status": status.value, "m_now": now, "m_task": task_id}
    )


def search(s: orm.Session, f: BackupFilter, page: PageRequest) -> Page[Backup]:
    rows, more = fetch_page(
        s, B, _where(f), page, columns=SORT_COLUMNS, tiebreak=B.__table__.c.id, noun="backup"
    )
    return Page(items=_assemble(s, rows), has_more=more)


def count(s: orm.Session, f: BackupFilter) -> int:
    return int(s.execute(sa.select(sa.func.count()).select_from(B).where(*_where(f))).scalar_one())


def set_status(
    s: orm.Session, backup_id: str, status: BackupStatus, now: dt.datetime, **values: Any
) -> None:
    if not values:  # a prebuilt statement for the common case (every task's start)
        s.connection().execute(
            _SET_STATUS, {"x_id": backup_id, "x_status": status.value, "x_now": now}
        )
        return
    s.execute(
        sa.update(B).where(B.id == backup_id).values(status=status.value, updated_at=now, **values)
    )


def update_backup(s: orm.Session, backup_id: str, now: dt.datetime, **values: Any) -> None:
    s.execute(sa.update(B).where(B.id == backup_id).values(updated_at=now, **values))


def update_disk_backup(s: orm.Session, disk_backup_id: str, **values: Any) -> None:
    s.execute(
        sa.update(tables.DiskBackup).where(tables.DiskBackup.id == disk_backup_id).values(**values)
    )


def set_disk_status(s: orm.Session, backup_id: str, status: BackupStatus) -> None:
    s.execute(
        sa.update(tables.DiskBackup)
        .where(tables.DiskBackup.backup_id == backup_id)
        .values(status=status.value)
    )


#: The statuses of a backup being made.
_BEING_MADE = (BackupStatus.WAITING_PROTECT.value, BackupStatus.PROTECTING.value)


def server_busy(s: orm.Session, server_id: str) -> bool:
    """Whether a backup of this server is being made right now."""
    return _any_being_made(s, B.resource_id == server_id)


def policy_busy(s: orm.Session, policy_id: str) -> bool:
    """Whether a backup made by this policy is being made right now."""
    return _any_being_made(s, B.plan_id == policy_id)


def _any_being_made(s: orm.Session, which: sa.ColumnElement[bool]) -> bool:
    found = s.execute(sa.select(B.id).where(which, B.status.in_(_BEING_MADE)).limit(1))
    return found.first() is not None


def has_available_backup(s: orm.Session, server_id: str) -> bool:
    """Whether the server has an available backup (first backups are full, later
    incremental)."""
    found = s.execute(
        sa.select(B.id)
        .where(B.resource_id == server_id, B.status == BackupStatus.AVAILABLE.value)
        .limit(1)
    ).first()
    return found is not None


def recent_available_extras(
    s: orm.Session, server_id: str, limit: int = 5
) -> list[Mapping[str, Any]]:
    """The `extra` of the server's latest available backups, newest first (what an
    unchanged disk may reuse)."""
    rows = s.execute(
        sa.select(B.extra)
        .where(B.resource_id == server_id, B.status == BackupStatus.AVAILABLE.value)
        .order_by(B.created_at.desc(), B.id.desc())
        .limit(limit)
    ).all()
    return [row.extra or {} for row in rows]


def get_checkpoint(s: orm.Session, checkpoint_id: str) -> Checkpoint | None:
    row = s.get(tables.Checkpoint, checkpoint_id)
    if row is None:
        return None
    return _checkpoint(s, [row])[0]


CHECKPOINT_SORT_COLUMNS: Mapping[str, sa.ColumnElement[Any]] = {
    "created_at": tables.Checkpoint.__table__.c.created_at,
    "id": tables.Checkpoint.__table__.c.id,
}


def _has_member(*statuses: BackupStatus) -> sa.ColumnElement[bool]:
    b = B.__table__.c
    return sa.exists().where(
        b.checkpoint_id == tables.Checkpoint.__table__.c.id,
        b.status.in_([x.value for x in statuses]),
    )


def _checkpoint_where(f: CheckpointFilter) -> list[sa.ColumnElement[bool]]:
    c = tables.Checkpoint.__table__.c
    # A record whose backups are all gone is not listed (it is about to be removed).
    conds = [_has_member(*[x for x in BackupStatus if x is not BackupStatus.DELETED])]
    if f.project_id is not None:
        conds.append(c.project_id == f.project_id)
    if f.plan_id is not None:
        conds.append(c.plan_id == f.plan_id)
    if f.created_from is not None:
        conds.append(c.created_at >= f.created_from)
    if f.created_to is not None:
        conds.append(c.created_at <= f.created_to)
    if f.status is not None:
        # The status `checkpoint_status` derives from the members', written as SQL:
        # protecting wins over deleting, deleting over error, error over available.
        protecting = _has_member(BackupStatus.PROTECTING, BackupStatus.WAITING_PROTECT)
        deleting = _has_member(BackupStatus.DELETING, BackupStatus.WAITING_DELETE)
        error = _has_member(BackupStatus.ERROR)
        by_status: dict[str, sa.ColumnElement[bool]] = {
            "protecting": protecting,
            "deleting": sa.and_(~protecting, deleting),
            "error": sa.and_(~protecting, ~deleting, error),
            "available": sa.and_(~protecting, ~deleting, ~error),
        }
        conds.append(by_status.get(f.status, sa.false()))
    return conds


def list_checkpoints(s: orm.Session, f: CheckpointFilter, page: PageRequest) -> Page[Checkpoint]:
    rows, more = fetch_page(
        s,
        tables.Checkpoint,
        _checkpoint_where(f),
        page,
        columns=CHECKPOINT_SORT_COLUMNS,
        tiebreak=tables.Checkpoint.__table__.c.id,
        noun="checkpoint",
    )
    return Page(items=_checkpoint(s, rows), has_more=more)


def _checkpoint(s: orm.Session, rows: Sequence[tables.Checkpoint]) -> list[Checkpoint]:
    ids = [r.id for r in rows]
    members: dict[str, list[tuple[str, str, str]]] = {i: [] for i in ids}
    if ids:
        for cp_id, rid, rname, status in s.execute(
            sa.select(B.checkpoint_id, B.resource_id, B.resource_name, B.status).where(
                B.checkpoint_id.in_(ids), B.status != BackupStatus.DELETED.value
            )
        ):
            members[cp_id].append((rid, rname, status))
    return [
        Checkpoint(
            id=r.id,
            project_id=r.project_id,
            plan_id=r.plan_id,
            plan_name=r.plan_name,
            status=checkpoint_status([BackupStatus(m[2]) for m in members[r.id]]),
            created_at=r.created_at,
            created_by=r.created_by,
            resources=tuple((m[0], m[1]) for m in members[r.id]),
        )
        for r in rows
    ]


# A task's start (status) and a deletion's end (the rows removed): Core statements, built once.
_CT: sa.Table = tables.Checkpoint.__table__  # type: ignore[assignment]
_DELETE_BACKUP = _BT.delete().where(_BT.c.id == sa.bindparam("x_id"))
# PostgreSQL: the backup's row goes and its record's row is locked, in one statement.
_DELETE_BACKUP_LOCK_RECORD = (
    sa.select(_CT.c.id)
    .where(_CT.c.id == sa.bindparam("x_cp"))
    .with_for_update()
    .add_cte(_DELETE_BACKUP.cte("gone"))
)
_DELETE_EMPTY_CHECKPOINT = _CT.delete().where(
    _CT.c.id == sa.bindparam("x_cp"),
    ~sa.exists().where(_BT.c.checkpoint_id == sa.bindparam("x_cp")),
)
_SET_STATUS = (
    _BT.update()
    .where(_BT.c.id == sa.bindparam("x_id"))
    .values(status=sa.bindparam("x_status"), updated_at=sa.bindparam("x_now", type_=UTCDateTime()))
)


def forget_backup(s: orm.Session, backup_id: str, checkpoint_id: str | None) -> bool:
    """Remove a deleted backup's row, and its record's row when it was the record's last
    backup; returns whether the record went too.

    Two deletions ending at once that remove a record's last two backups must not each see
    the other's backup and both keep the record: on PostgreSQL the record's row is locked
    first, so the second waits and checks after the first has committed (its next
    statement sees that commit). SQLite runs one writer at a time."""
    conn = s.connection()
    if checkpoint_id is None:
        conn.execute(_DELETE_BACKUP, {"x_id": backup_id})
        return False
    values = {"x_id": backup_id, "x_cp": checkpoint_id}
    if conn.dialect.name == "postgresql":
        conn.execute(_DELETE_BACKUP_LOCK_RECORD, values)
    else:
        conn.execute(_DELETE_BACKUP, values)
    return conn.execute(_DELETE_EMPTY_CHECKPOINT, values).rowcount > 0
