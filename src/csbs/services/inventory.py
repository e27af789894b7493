"""Servers and disks: registration by operators, reads by each project.

A disk is a regular file or a block device beneath one of the configured inventory roots,
reached without following any symlink (`csbs.fileio.confined`). Registration opens it that
way and records what it is (its identity); every backup and restore opens it the same way,
once, checks that it is still the registered disk, and uses that file descriptor only
(`open_disk`).

Servers belong to hosts (decision 0020): a disk path is unique on its host, not across
hosts. The disks of a server on another host than this process's are opened by a worker of
that host, under that worker's inventory roots: registration enqueues a short
`check_disks` task routed there and waits for it (`disk_check_timeout_seconds`). When the
deployment has live workers on more than one host, a server must name its host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

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
from csbs.queue import EnqueueRequest, TaskStatus, TaskStore

MAX_DISKS = 24
#: The task that opens a server's disk paths on its host, for a registration elsewhere.
CHECK_DISKS = "check_disks"
#: The queue group of deployment-level tasks: no project, so no tenant lists them.
INTERNAL_PROJECT = "-"
_POLL_SECONDS = 0.02


@dataclasses.dataclass(frozen=True)
class DiskSpec:
    path: str
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class OpenedPath:
    """What opening one disk path found: where it is, its size and identity."""

    path: str
    size: int
    identity: str


def open_paths(paths: Sequence[str], rules: Rules, *, allow_hardlinks: bool) -> list[OpenedPath]:
    """Open each path as registration does (beneath `rules`' roots, read-write)."""
    found = []
    for path in paths:
        with open_confined(path, rules, write=True, allow_hardlinks=allow_hardlinks) as opened:
            found.append(OpenedPath(opened.path, opened.size, str(opened.identity)))
    return found


class InventoryService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        rules: Rules,
        tasks: TaskStore | None = None,
        *,
        local_host: str | None = None,
        check_timeout: float = 30.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self.rules = rules
        self._tasks = tasks
        #: The host of this process (`worker_host`): disks of servers there open here.
        self.local_host = local_host
        self.check_timeout = check_timeout

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
        opened = self._open(host, [d.path for d in disks], allow_hardlinks=allow_hardlinks)
        built: list[Disk] = []
        for i, (spec, found) in enumerate(zip(disks, opened, strict=True)):
            disk_name = check_name("disk", spec.name) if spec.name else f"{name}-disk{i}"
            built.append(
                Disk(
                    id=new_id(),
                    server_id=sid,
                    name=disk_name,
                    device_name=f"/dev/vd{chr(ord('a') + i)}",
                    path=found.path,
                    size_bytes=found.size,
                    bootable=i == 0,
                    identity=found.identity,
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
                taken = q.path_in_use(s, host, paths)
                if taken:
                    where = f" on host {host}" if host else ""
                    raise errors.InvalidInput(
                        f"disk path {taken[0]}{where} belongs to another server"
                    )
                return q.add_server(s, server)
        except sqlalchemy.exc.IntegrityError as e:
            raise errors.InvalidInput("a disk path or server id is already registered") from e

    # -- where a server's disks are opened ----------------------------------------------

    def _open(
        self, host: str | None, paths: Sequence[str], *, allow_hardlinks: bool
    ) -> list[OpenedPath]:
        """Open the disk paths of a server on `host`: here when the server is on this
        process's host, else by a worker of its host.

        Raises:
            InvalidInput: no host named while workers run on several; no live worker on the
                host; a path its worker refused (with the worker's reason).
            ServiceUnavailable: the worker did not answer within `check_timeout`.
        """
        live = self._tasks.workers.live_hosts() if self._tasks is not None else set()
        if host is None and len(live) > 1:
            raise errors.InvalidInput(
                f"host: this deployment has workers on several hosts ({', '.join(sorted(live))});"
                " a server must name the host whose worker reaches its disks"
            )
        elsewhere = (
            host != self.local_host
            if host is not None
            else bool(live) and self.local_host not in live
        )
        if self._tasks is None or self.local_host is None or not elsewhere:
            return open_paths(paths, self.rules, allow_hardlinks=allow_hardlinks)
        if host is not None and host not in live:
            raise errors.InvalidInput(
                f"host: no live worker on host {host} to check the server's disk paths"
                " (csbs worker list shows the workers)"
            )
        return self._open_by_worker(self._tasks, host, paths, allow_hardlinks=allow_hardlinks)

    def _open_by_worker(
        self, tasks: TaskStore, host: str | None, paths: Sequence[str], *, allow_hardlinks: bool
    ) -> list[OpenedPath]:
        where = f"host {host}" if host else "the workers' host"
        task = tasks.enqueue_one(
            EnqueueRequest(
                INTERNAL_PROJECT,
                CHECK_DISKS,
                {"paths": list(paths), "allow_hardlinks": allow_hardlinks},
                route=host,
                deadline_seconds=self.check_timeout,
            )
        )
        deadline = time.monotonic() + self.check_timeout
        done = tasks.get(task.id)
        while done is not None and not done.status.terminal and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
            done = tasks.get(task.id)
        tasks.forget(task.id)  # its answer is read (or no longer awaited): the row goes
        if done is None or not done.status.terminal:
            raise errors.ServiceUnavailable(
                f"the worker on {where} did not check the server's disk paths within "
                f"{self.check_timeout:g} seconds"
            )
        if done.status is not TaskStatus.SUCCESS:
            info: dict[str, Any] = dict(done.error_info or {})
            raise errors.InvalidInput(
                f"{where}: {info.get('message', 'the disk paths were refused')}",
                code=str(info.get("code", "CSBS.9001")),
            )
        return [
            OpenedPath(str(d["path"]), int(d["size"]), str(d["identity"]))
            for d in done.extra_info.get("disks", [])
        ]

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
