"""SQL for servers and their disks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db import tables
from csbs.domain.inventory import Disk, Server, ServerSource, ServerStatus


def _disk(row: tables.Disk) -> Disk:
    return Disk(
        id=row.id,
        server_id=row.server_id,
        name=row.name,
        device_name=row.device_name,
        path=row.path,
        size_bytes=row.size_bytes,
        bootable=row.bootable,
        identity=row.identity,
        target=row.target,
        format=row.format,
        kind=row.kind,
        source=row.source,
        unsupported=row.unsupported,
    )


def _server(row: tables.Server, disks: Sequence[tables.Disk]) -> Server:
    return Server(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        host=row.host,
        status=ServerStatus(row.status),
        created_at=row.created_at,
        disks=tuple(_disk(d) for d in sorted(disks, key=lambda d: d.position)),
        allow_hardlinks=bool(row.allow_hardlinks),
        source=ServerSource(row.source),
        nova_project=row.nova_project,
    )


def add_server(s: orm.Session, server: Server) -> Server:
    s.add(
        tables.Server(
            id=server.id,
            project_id=server.project_id,
            name=server.name,
            host=server.host,
            status=server.status.value,
            created_at=server.created_at,
            allow_hardlinks=server.allow_hardlinks,
            source=server.source.value,
            nova_project=server.nova_project,
        )
    )
    s.flush()  # the server row first: its disks refer to it
    for position, d in enumerate(server.disks):
        s.add(_disk_row(server.id, position, d))
    s.flush()
    return server


def _disk_row(server_id: str, position: int, d: Disk) -> tables.Disk:
    return tables.Disk(
        id=d.id,
        server_id=server_id,
        position=position,
        name=d.name,
        device_name=d.device_name,
        path=d.path,
        size_bytes=d.size_bytes,
        bootable=d.bootable,
        identity=d.identity,
        target=d.target,
        format=d.format,
        kind=d.kind,
        source=d.source,
        unsupported=d.unsupported,
    )


def _disks_of(s: orm.Session, server_ids: list[str]) -> dict[str, list[tables.Disk]]:
    out: dict[str, list[tables.Disk]] = {i: [] for i in server_ids}
    if server_ids:
        for d in s.scalars(sa.select(tables.Disk).where(tables.Disk.server_id.in_(server_ids))):
            out[d.server_id].append(d)
    return out


def get_server(s: orm.Session, server_id: str, *, for_update: bool = False) -> Server | None:
    stmt = sa.select(tables.Server).where(tables.Server.id == server_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = s.scalars(stmt).one_or_none()
    if row is None:
        return None
    return _server(row, _disks_of(s, [row.id])[row.id])


def list_servers(
    s: orm.Session, project_id: str | None, *, unassigned: bool = False
) -> list[Server]:
    """The servers of `project_id` (None: of every project, and those of none), or with
    `unassigned` those that no project has."""
    stmt = sa.select(tables.Server).order_by(tables.Server.name, tables.Server.id)
    if unassigned:
        stmt = stmt.where(tables.Server.project_id.is_(None))
    elif project_id is not None:
        stmt = stmt.where(tables.Server.project_id == project_id)
    rows = list(s.scalars(stmt))
    disks = _disks_of(s, [r.id for r in rows])
    return [_server(r, disks[r.id]) for r in rows]


def path_in_use(s: orm.Session, paths: Sequence[str]) -> list[str]:
    return list(s.scalars(sa.select(tables.Disk.path).where(tables.Disk.path.in_(list(paths)))))


def delete_server(s: orm.Session, server_id: str) -> bool:
    s.execute(sa.delete(tables.Disk).where(tables.Disk.server_id == server_id))
    result = s.execute(sa.delete(tables.Server).where(tables.Server.id == server_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def set_status(s: orm.Session, server_id: str, status: ServerStatus) -> bool:
    result = s.execute(
        sa.update(tables.Server).where(tables.Server.id == server_id).values(status=status.value)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def update_disks(
    s: orm.Session,
    server_id: str,
    disks: Mapping[str, tuple[int, str]],
    *,
    allow_hardlinks: bool,
) -> None:
    """Record each disk's size and identity (disk id -> (size, identity)) as found now."""
    s.execute(
        sa.update(tables.Server)
        .where(tables.Server.id == server_id)
        .values(allow_hardlinks=allow_hardlinks)
    )
    for disk_id, (size, identity) in disks.items():
        s.execute(
            sa.update(tables.Disk)
            .where(tables.Disk.id == disk_id, tables.Disk.server_id == server_id)
            .values(size_bytes=size, identity=identity)
        )


# -- libvirt domains ------------------------------------------------------------------------


def libvirt_servers(s: orm.Session, host: str) -> list[Server]:
    """The discovered servers a host's worker keeps in step (locked on PostgreSQL)."""
    rows = list(
        s.scalars(
            sa.select(tables.Server)
            .where(tables.Server.source == ServerSource.LIBVIRT.value, tables.Server.host == host)
            .order_by(tables.Server.id)
            .with_for_update()
        )
    )
    disks = _disks_of(s, [r.id for r in rows])
    return [_server(r, disks[r.id]) for r in rows]


def update_libvirt_server(s: orm.Session, server: Server) -> None:
    """Write a discovered server as found now: its row, and its disks replaced (a disk
    keeps its id while its target stays, so backups name the same disk)."""
    s.execute(
        sa.update(tables.Server)
        .where(tables.Server.id == server.id)
        .values(
            project_id=server.project_id,
            name=server.name,
            host=server.host,
            status=server.status.value,
            nova_project=server.nova_project,
        )
    )
    s.execute(sa.delete(tables.Disk).where(tables.Disk.server_id == server.id))
    s.flush()
    for position, d in enumerate(server.disks):
        s.add(_disk_row(server.id, position, d))
    s.flush()


def project_ids(s: orm.Session, candidates: Sequence[str]) -> set[str]:
    """Which of `candidates` are projects."""
    if not candidates:
        return set()
    return set(
        s.scalars(sa.select(tables.Project.id).where(tables.Project.id.in_(list(candidates))))
    )


def assign(s: orm.Session, server_id: str, project_id: str) -> bool:
    """Give an unassigned server to a project; False when it has one already."""
    result = s.execute(
        sa.update(tables.Server)
        .where(tables.Server.id == server_id, tables.Server.project_id.is_(None))
        .values(project_id=project_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
