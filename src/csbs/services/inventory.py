"""Servers and disks: registration by operators, reads by each project.

A disk path is trusted only when it resolves (symlinks followed) to a regular file or a block
device under one of the configured inventory roots; everything else is refused before it
is stored, and checked again before every read or write (`open_disk_path`).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy.exc

from csbs.db.engine import Database
from csbs.db.queries import inventory as q
from csbs.domain import errors
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.inventory import Disk, Server, ServerNotFound, ServerStatus, check_name

MAX_DISKS = 24


@dataclasses.dataclass(frozen=True)
class DiskSpec:
    path: str
    name: str | None = None


def resolve_disk_path(path: str, roots: Sequence[Path]) -> tuple[Path, int]:
    """The real path of a disk and its size in bytes.

    Raises:
        InvalidInput: not absolute, contains `..`, outside every root (after following
            symlinks), not a regular file or block device, or not readable and writable.
    """
    if not path or "\x00" in path:
        raise errors.InvalidInput("disk path must not be empty")
    p = Path(path)
    if not p.is_absolute():
        raise errors.InvalidInput(f"disk path {path!r} must be absolute")
    if ".." in p.parts:
        raise errors.InvalidInput(f"disk path {path!r} must not contain '..'")
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise errors.InvalidInput(f"disk path {path!r} does not exist") from e
    real_roots = [r.resolve() for r in roots]
    if not any(real == r or r in real.parents for r in real_roots):
        raise errors.InvalidInput(
            f"disk path {path!r} is outside the inventory roots ({', '.join(map(str, roots))})"
        )
    st = os.stat(real)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise errors.InvalidInput(f"disk path {path!r} is not a regular file or block device")
    if not os.access(real, os.R_OK | os.W_OK):
        raise errors.InvalidInput(f"disk path {path!r} is not readable and writable by csbs")
    fd = os.open(real, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    return real, size


class InventoryService:
    def __init__(self, db: Database, clock: Clock, roots: Sequence[Path]) -> None:
        self._db = db
        self._clock = clock
        self.roots = list(roots)

    def add_server(
        self,
        project_id: str,
        name: str,
        disks: Sequence[DiskSpec],
        *,
        host: str | None = None,
        status: ServerStatus = ServerStatus.STOPPED,
        server_id: str | None = None,
    ) -> Server:
        """Register a server with its disks (the first disk is the system disk)."""
        check_name("server", name)
        if not disks:
            raise errors.InvalidInput("a server needs at least one disk")
        if len(disks) > MAX_DISKS:
            raise errors.InvalidInput(f"a server has at most {MAX_DISKS} disks")
        sid = server_id or new_id()
        built: list[Disk] = []
        for i, spec in enumerate(disks):
            real, size = resolve_disk_path(spec.path, self.roots)
            disk_name = check_name("disk", spec.name) if spec.name else f"{name}-disk{i}"
            built.append(
                Disk(
                    id=new_id(),
                    server_id=sid,
                    name=disk_name,
                    device_name=f"/dev/vd{chr(ord('a') + i)}",
                    path=str(real),
                    size_bytes=size,
                    bootable=i == 0,
                )
            )
        paths = [d.path for d in built]
        if len(set(paths)) != len(paths):
            raise errors.InvalidInput("the same disk path is given twice")
        server = Server(
            id=sid,
            project_id=project_id,
            name=name,
            host=host,
            status=status,
            created_at=self._clock.now(),
            disks=tuple(built),
        )
        try:
            with self._db.write() as s:
                taken = q.path_in_use(s, paths)
                if taken:
                    raise errors.InvalidInput(f"disk path {taken[0]} belongs to another server")
                return q.add_server(s, server)
        except sqlalchemy.exc.IntegrityError as e:
            raise errors.InvalidInput("a disk path or server id is already registered") from e

    def get(self, project_id: str | None, server_id: str) -> Server:
        """A server of `project_id` (None: any). Another project's server is "not found"."""
        with self._db.read() as s:
            server = q.get_server(s, server_id)
        if server is None or (project_id is not None and server.project_id != project_id):
            raise ServerNotFound(server_id)
        return server

    def servers(self, project_id: str | None) -> list[Server]:
        with self._db.read() as s:
            return q.list_servers(s, project_id)

    def remove(self, project_id: str | None, server_id: str) -> None:
        self.get(project_id, server_id)
        with self._db.write() as s:
            q.delete_server(s, server_id)

    def set_status(self, project_id: str | None, server_id: str, status: ServerStatus) -> Server:
        self.get(project_id, server_id)
        with self._db.write() as s:
            q.set_status(s, server_id, status)
        return self.get(project_id, server_id)


def open_disk_path(disk: Disk, roots: Sequence[Path]) -> Path:
    """Check a registered disk again right before use (its path may have changed since)."""
    real, _ = resolve_disk_path(disk.path, roots)
    if str(real) != disk.path:
        raise errors.InvalidInput(f"disk {disk.id} now resolves elsewhere; refusing to use it")
    return real
