"""SQL for servers and their disks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db import tables
from csbs.domain.inventory import Disk, Server, ServerStatus


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
        )
    )
    s.flush()  # the server row first: its disks refer to it
    for position, d in enumerate(server.disks):
        s.add(
            tables.Disk(
                id=d.id,
                server_id=server.id,
                position=position,
                name=d.name,
                device_name=d.device_name,
                path=d.path,
                host=server.host or "",
                size_bytes=d.size_bytes,
                bootable=d.bootable,
                identity=d.identity,
            )
        )
    s.flush()
    return server


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


def list_servers(s: orm.Session, project_id: str | None) -> list[Server]:
    stmt = sa.select(tables.Server).order_by(tables.Server.name, tables.Server.id)
    if project_id is not None:
        stmt = stmt.where(tables.Server.project_id == project_id)
    rows = list(s.scalars(stmt))
    disks = _disks_of(s, [r.id for r in rows])
    return [_server(r, disks[r.id]) for r in rows]


def path_in_use(s: orm.Session, host: str | None, paths: Sequence[str]) -> list[str]:
    """Which of `paths` a disk on `host` has already. A disk of a server with no host
    may be on any host: it clashes with the same path on every host, and the other way
    round."""
    stmt = sa.select(tables.Disk.path).where(tables.Disk.path.in_(list(paths)))
    if host:
        stmt = stmt.where(tables.Disk.host.in_([host, ""]))
    return list(s.scalars(stmt))


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
