"""Servers and disks: registration by operators, reads by each project.

A disk is a regular file or a block device beneath one of the configured inventory roots,
reached without following any symlink (`csbs.fileio.confined`). Registration opens it that
way and records what it is (its identity); every backup and restore opens it the same way,
once, checks that it is still the registered disk, and uses that file descriptor only
(`open_disk`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import sqlalchemy.exc

from csbs.db.engine import Database
from csbs.db.queries import inventory as q
from csbs.domain import errors
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.inventory import (
    Disk,
    Server,
    ServerNotFound,
    ServerSource,
    ServerStatus,
    check_name,
)
from csbs.fileio.confined import OpenDisk, Rules
from csbs.fileio.confined import open_disk as open_confined

MAX_DISKS = 24


@dataclasses.dataclass(frozen=True)
class DiskSpec:
    path: str
    name: str | None = None


class InventoryService:
    def __init__(self, db: Database, clock: Clock, rules: Rules) -> None:
        self._db = db
        self._clock = clock
        self.rules = rules

    def add_server(
        self,
        project_id: str,
        name: str,
        disks: Sequence[DiskSpec],
        *,
        host: str | None = None,
        status: ServerStatus = ServerStatus.STOPPED,
        server_id: str | None = None,
        allow_hardlinks: bool = False,
    ) -> Server:
        """Register a server with its disks (the first disk is the system disk).

        `allow_hardlinks` lets its disks be regular files with more than one link (an
        admin's choice: a hard link can bring any file of the file system beneath a root).
        """
        check_name("server", name)
        if not disks:
            raise errors.InvalidInput("a server needs at least one disk")
        if len(disks) > MAX_DISKS:
            raise errors.InvalidInput(f"a server has at most {MAX_DISKS} disks")
        sid = server_id or new_id()
        built: list[Disk] = []
        for i, spec in enumerate(disks):
            with open_confined(
                spec.path, self.rules, write=True, allow_hardlinks=allow_hardlinks
            ) as opened:
                path, size, identity = opened.path, opened.size, str(opened.identity)
            disk_name = check_name("disk", spec.name) if spec.name else f"{name}-disk{i}"
            built.append(
                Disk(
                    id=new_id(),
                    server_id=sid,
                    name=disk_name,
                    device_name=f"/dev/vd{chr(ord('a') + i)}",
                    path=path,
                    size_bytes=size,
                    bootable=i == 0,
                    identity=identity,
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
            allow_hardlinks=allow_hardlinks,
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

    def servers(self, project_id: str | None, *, unassigned: bool = False) -> list[Server]:
        """The servers of `project_id` (None: every server), or with `unassigned` the
        discovered servers that no project has yet."""
        with self._db.read() as s:
            return q.list_servers(s, project_id, unassigned=unassigned)

    def assign(self, server_id: str, project_id: str) -> Server:
        """Give a discovered server that no project has to `project_id` (admins).

        Raises:
            ServerNotFound: no such server.
            InvalidInput: a registered server, a Nova instance (its owner is Nova's), or a
                server that belongs to another project already.
        """
        server = self.get(None, server_id)
        if server.project_id == project_id:
            return server
        if server.source is not ServerSource.LIBVIRT:
            raise errors.InvalidInput(
                f"Server ({server_id}) was registered in its project; only discovered "
                "servers are assigned."
            )
        if server.nova_project is not None:
            raise errors.InvalidInput(
                f"Server ({server_id}) is a Nova instance: it belongs to the project its "
                "metadata names."
            )
        with self._db.write() as s:
            if not q.project_ids(s, [project_id]):
                raise errors.NotFound(f"Project ({project_id}) does not exist.")
            if not q.assign(s, server_id, project_id):
                raise errors.InvalidInput(
                    f"Server ({server_id}) belongs to another project already."
                )
        return self.get(None, server_id)

    def remove(self, project_id: str | None, server_id: str) -> None:
        self.get(project_id, server_id)
        with self._db.write() as s:
            q.delete_server(s, server_id)

    def refresh(self, server_id: str, *, allow_hardlinks: bool | None = None) -> Server:
        """Accept each disk of a server as it is now (an admin replaced an image file).

        Opens every disk as a backup would, without the identity check, and records its
        identity and size; `allow_hardlinks` changes that setting of the server first.
        """
        server = self.get(None, server_id)
        allow = server.allow_hardlinks if allow_hardlinks is None else allow_hardlinks
        found: dict[str, tuple[int, str]] = {}
        for disk in server.disks:
            with open_confined(disk.path, self.rules, write=True, allow_hardlinks=allow) as d:
                found[disk.id] = (d.size, str(d.identity))
        with self._db.write() as s:
            q.update_disks(s, server_id, found, allow_hardlinks=allow)
        return self.get(None, server_id)

    def set_status(self, project_id: str | None, server_id: str, status: ServerStatus) -> Server:
        if self.get(project_id, server_id).source is ServerSource.LIBVIRT:
            raise errors.InvalidInput(
                f"Server ({server_id}) is a libvirt domain: its status follows libvirt."
            )
        with self._db.write() as s:
            q.set_status(s, server_id, status)
        return self.get(project_id, server_id)


def open_disk(server: Server, disk: Disk, rules: Rules, *, write: bool) -> OpenDisk:
    """Open a registered disk for a backup (`write` False) or a restore, right before use.

    Raises:
        DiskRefused: it is no longer reachable beneath its root without symlinks, no longer
            the registered file or device, or otherwise refused (`csbs.fileio.confined`).
    """
    return open_confined(
        disk.path,
        rules,
        write=write,
        expected=disk.identity,
        allow_hardlinks=server.allow_hardlinks,
    )
