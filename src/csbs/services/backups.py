"""Creating, reading and counting backups (CSBS R1, R2, B3-B5, K3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db.engine import Database, joined_session
from csbs.db.queries import backups as q
from csbs.db.queries import inventory as inv
from csbs.domain import errors
from csbs.domain.backups import (
    CONSISTENCY_NONE,
    Backup,
    BackupFilter,
    BackupRunning,
    BackupStatus,
    Checkpoint,
    CheckpointFilter,
    CheckpointNotFound,
    DiskBackup,
    FileFacts,
    Tag,
    check_backup_name,
    check_description,
    check_tags,
    default_name,
)
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.inventory import (
    SERVER_TYPE,
    Server,
    ServerNotFound,
    ServerStatus,
    unsupported_type,
)
from csbs.domain.operations import OperationType
from csbs.domain.paging import Page, PageRequest
from csbs.domain.providers import CSBS_PROVIDER_ID
from csbs.queue import EnqueueRequest, Task, TaskStatus, TaskStore
from csbs.queue.jobs import Refs
from csbs.services.quotas import QuotaService

SORT_KEYS = frozenset({"created_at", "updated_at", "name", "status", "protected_at", "id"})
DEFAULT_SORT = "created_at:desc"
CHECKPOINT_SORT_KEYS = frozenset({"created_at", "id"})


@dataclasses.dataclass(frozen=True)
class ProtectRequest:
    server_id: str
    name: str | None = None
    description: str = ""
    incremental: bool | None = None
    resource_type: str = SERVER_TYPE
    tags: Sequence[tuple[str, str]] = ()
    extra_info: dict[str, Any] | None = None
    auto_trigger: bool = False
    plan_id: str | None = None
    plan_name: str | None = None


@dataclasses.dataclass(frozen=True)
class NewBackups:
    """What the backups of one new backup record share."""

    name: str
    description: str = ""
    incremental: bool | None = None
    tags: tuple[Tag, ...] = ()
    extra_info: dict[str, Any] | None = None
    auto_trigger: bool = False
    plan_id: str | None = None
    plan_name: str | None = None


@dataclasses.dataclass(frozen=True)
class Capability:
    resource_id: str
    resource_type: str
    result: bool
    error_code: str = ""
    error_msg: str = ""


class BackupService:
    def __init__(self, db: Database, clock: Clock, tasks: TaskStore, quotas: QuotaService) -> None:
        self._db = db
        self._clock = clock
        self._tasks = tasks
        self._quotas = quotas

    # -- R2: can it be backed up? -------------------------------------------------------------

    def check_protectable(
        self, project_id: str, items: Sequence[tuple[str, str]]
    ) -> list[Capability]:
        out = []
        with self._db.read() as s:
            for resource_id, resource_type in items:
                try:
                    if resource_type != SERVER_TYPE:
                        raise unsupported_type(resource_id, resource_type)
                    server = inv.get_server(s, resource_id)
                    if server is None or server.project_id != project_id:
                        raise ServerNotFound(resource_id)
                    self.check_server(server)
                    if q.server_busy(s, server.id):
                        raise BackupRunning(f"Server ({server.id}) is being backed up.")
                    out.append(Capability(resource_id, resource_type, True))
                except errors.CsbsError as e:
                    out.append(Capability(resource_id, resource_type, False, e.code, e.message))
        return out

    def check_quota(self, s: orm.Session, project_id: str, count: int) -> None:
        """In a write transaction, before any server is locked: would `count` more backups
        exceed the project's quotas? Raises QuotaExceeded (400 CSBS.9006)."""
        self._quotas.check_new_backups(s, project_id, count)

    def lock_server(self, s: orm.Session, project_id: str, server_id: str) -> Server:
        """Lock a server of the project that may be backed up now, in `s`'s transaction.

        Raises:
            ServerNotFound (6000), InvalidInput (6006, 6007), BackupRunning (1001).
        """
        server = inv.get_server(s, server_id, for_update=True)
        if server is None or server.project_id != project_id:
            raise ServerNotFound(server_id)
        self.check_server(server)
        if q.server_busy(s, server.id):
            raise BackupRunning(
                f"Server ({server.id}) is being backed up: its previous backup is still running."
            )
        return server

    @staticmethod
    def check_server(server: Server) -> None:
        if not server.disks:
            raise errors.InvalidInput(
                f"No volume attached to the server ({server.id}) for protect.", code="CSBS.6007"
            )
        if server.status not in (ServerStatus.RUNNING, ServerStatus.STOPPED):
            raise errors.InvalidInput(
                f"Server ({server.id}) status ({server.status}) is not allowed to protect.",
                code="CSBS.6006",
            )
        for disk in server.disks:
            if disk.unsupported:
                raise errors.InvalidInput(
                    f"Volume ({disk.target or disk.name}) of server ({server.id}) does not "
                    f"support backup: {disk.unsupported}.",
                    code="CSBS.6061",
                )

    # -- R1: back a server up ---------------------------------------------------------------

    def protect(self, project_id: str, req: ProtectRequest) -> tuple[Checkpoint, Backup]:
        """Create the backup record and the backup at once; the data is read by a task.

        Raises:
            InvalidInput: bad name, description, tags or resource type (CSBS.9001/6003/7000).
            ServerNotFound: no such server in this project (CSBS.6000).
            BackupRunning: the server is being backed up (CSBS.1001).
        """
        if req.resource_type != SERVER_TYPE:
            raise unsupported_type(req.server_id, req.resource_type)
        name = (
            check_backup_name(req.name)
            if req.name is not None
            else default_name("autobk" if req.auto_trigger else "manualbk")
        )
        description = check_description(req.description)
        tags = check_tags(req.tags)
        spec = NewBackups(
            name=name,
            description=description,
            incremental=req.incremental,
            tags=tags,
            extra_info=req.extra_info,
            auto_trigger=req.auto_trigger,
            plan_id=req.plan_id,
            plan_name=req.plan_name,
        )
        with self._db.write() as s:
            # First: the project's row is locked before any server's (as policies do).
            self.check_quota(s, project_id, 1)
            server = self.lock_server(s, project_id, req.server_id)
            checkpoint, backups = self.create_backups(s, project_id, [server], spec)
        self._tasks.poke(server.host)
        return checkpoint, backups[0]

    def create_backups(
        self, s: orm.Session, project_id: str, servers: Sequence[Server], spec: NewBackups
    ) -> tuple[Checkpoint, list[Backup]]:
        """One backup record with one backup (and its task) per server, in `s`'s transaction.

        The caller has locked and checked the servers (`check_server`, not busy); it pokes
        the workers after its commit. The caller checks the project's quotas first, before
        locking any server: `check_quota(s, project_id, len(servers))`.
        """
        now = self._clock.now()
        first = servers[0]
        checkpoint = Checkpoint(
            id=new_id(),
            project_id=project_id,
            plan_id=spec.plan_id or f"fake_{new_id()}",
            plan_name=spec.plan_name or f"server protect plan for {first.id}",
            status=BackupStatus.PROTECTING,
            created_at=now,
            created_by="auto" if spec.auto_trigger else "manual",
            resources=tuple((server.id, server.name) for server in servers),
        )
        q.add_checkpoint(s, checkpoint)
        made = []
        for server in servers:
            incremental = q.has_available_backup(s, server.id) and spec.incremental is not False
            backup_id = new_id()
            task_id = new_id()
            backup = Backup(
                id=backup_id,
                checkpoint_id=checkpoint.id,
                project_id=project_id,
                name=spec.name,
                description=spec.description,
                resource_id=server.id,
                resource_name=server.name,
                resource_type=SERVER_TYPE,
                status=BackupStatus.PROTECTING,
                created_at=now,
                updated_at=now,
                protected_at=None,
                finished_at=None,
                plan_id=spec.plan_id,
                auto_trigger=spec.auto_trigger,
                incremental=incremental,
                progress=0,
                consistency=CONSISTENCY_NONE,
                fail_op="",
                fail_reason="",
                fail_code="",
                task_id=task_id,
                extra={"user_extra_info": spec.extra_info or {}},
                tags=spec.tags,
                disks=tuple(
                    DiskBackup(
                        id=new_id(),
                        backup_id=backup_id,
                        disk_id=d.id,
                        disk_name=f"{spec.name}_{d.name}"[:255],
                        device_name=d.device_name,
                        bootable=d.bootable,
                        source_size=d.size_bytes,
                        status=BackupStatus.PROTECTING,
                        incremental=incremental,
                    )
                    for d in server.disks
                ),
            )
            q.add_backup(s, backup)
            self._tasks.enqueue(
                s.connection(),
                EnqueueRequest(
                    project_id=project_id,
                    operation_type=OperationType.BACKUP,
                    params={"backup_id": backup_id},
                    refs=Refs(
                        provider_id=CSBS_PROVIDER_ID,
                        checkpoint_id=checkpoint.id,
                        checkpoint_item_id=backup_id,
                        plan_id=spec.plan_id,
                        resource_id=server.id,
                        resource_name=server.name,
                    ),
                    route=server.host,
                    task_id=task_id,
                ),
            )
            made.append(backup)
        return checkpoint, made

    # -- reads ------------------------------------------------------------------------------

    def get(self, project_id: str | None, backup_id: str) -> Backup:
        """Raises BackupNotFound (CSBS.3001) when unknown, deleted, or another project's."""
        with self._db.read() as s:
            b = q.get_backup(s, backup_id)
        if b is None or (project_id is not None and b.project_id != project_id):
            raise errors.BackupNotFound(backup_id)
        return b

    def repository_record(self, backup_id: str) -> tuple[str, str]:
        """A backup's project and the repository backup its last attempt recorded ('' when
        none did); only what deleting it needs.

        Raises BackupNotFound (CSBS.3001) when unknown or deleted."""
        with self._db.read() as s:
            found = q.project_and_extra(s, backup_id)
        if found is None:
            raise errors.BackupNotFound(backup_id)
        project_id, extra = found
        return project_id, str(extra.get("repository_backup_id", ""))

    def search(self, f: BackupFilter, page: PageRequest) -> Page[Backup]:
        with self._db.read() as s:
            return q.search(s, f, page)

    def count(self, f: BackupFilter) -> int:
        with self._db.read() as s:
            return q.count(s, f)

    def checkpoint(self, project_id: str, checkpoint_id: str) -> Checkpoint:
        with self._db.read() as s:
            cp = q.get_checkpoint(s, checkpoint_id)
        if cp is None or cp.project_id != project_id or not cp.resources:
            raise CheckpointNotFound(checkpoint_id)
        return cp

    def checkpoint_any(self, checkpoint_id: str) -> Checkpoint:
        """A backup record of any project (operators' command line)."""
        with self._db.read() as s:
            cp = q.get_checkpoint(s, checkpoint_id)
        if cp is None or not cp.resources:
            raise CheckpointNotFound(checkpoint_id)
        return cp

    def checkpoints(self, f: CheckpointFilter, page: PageRequest) -> Page[Checkpoint]:
        with self._db.read() as s:
            return q.list_checkpoints(s, f, page)


class BackupRecorder:
    """What the backup task writes about its own backup while and after it runs."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def repository_backup_id(self, backup: Backup, attempt: int) -> str:
        """Each attempt writes its own repository backup; earlier attempts' are released."""
        return f"{backup.id}.{attempt}"

    def started(self, backup_id: str, repo_backup_id: str, consistency: str) -> None:
        now = self._clock.now()
        with self._db.write() as s:
            b = q.get_backup(s, backup_id)
            extra = dict(b.extra) if b else {}
            extra["repository_backup_id"] = repo_backup_id
            q.update_backup(
                s, backup_id, now, protected_at=now, consistency=consistency, extra=extra
            )

    def previous_disks(self, server_id: str) -> dict[str, tuple[str, FileFacts]]:
        """By disk id: the repository backup and file facts of the disk in the server's
        latest available backup that recorded them."""
        with self._db.read() as s:
            extras = q.recent_available_extras(s, server_id)
        found: dict[str, tuple[str, FileFacts]] = {}
        for extra in reversed(extras):  # the newest wins
            repo_id = str(extra.get("repository_backup_id", ""))
            recorded = extra.get("disk_facts")
            if not repo_id or not isinstance(recorded, dict):
                continue
            for disk_id, raw in recorded.items():
                facts = FileFacts.from_dict(raw)
                if facts is not None:
                    found[str(disk_id)] = (repo_id, facts)
        return found

    def previous_image(self, server_id: str) -> str | None:
        """The repository backup of the server's latest available backup: what a disk
        that changed in part is stored over (`Repository` deltas), or None."""
        with self._db.read() as s:
            extras = q.recent_available_extras(s, server_id, limit=1)
        for extra in extras:
            repo_id = str(extra.get("repository_backup_id", ""))
            if repo_id:
                return repo_id
        return None

    def recent_extras(self, server_id: str) -> list[dict[str, Any]]:
        """The `extra` of the server's latest available backups, newest first."""
        with self._db.read() as s:
            return [dict(e) for e in q.recent_available_extras(s, server_id)]

    def vm_summary(
        self,
        backup_id: str,
        *,
        incremental: bool,
        reason: str | None,
        vm: Mapping[str, Any],
        incremental_disks: Mapping[str, bool],
    ) -> None:
        """Record what a VM backup read: incremental or not (and why not), its checkpoint
        and each disk's geometry (what the next backup's chain checks compare with)."""
        with self._db.write() as s:
            b = q.get_backup(s, backup_id)
            extra = dict(b.extra) if b else {}
            extra["vm"] = dict(vm)
            if reason:
                extra["incremental_reason"] = reason
            else:
                extra.pop("incremental_reason", None)
            q.update_backup(s, backup_id, self._clock.now(), incremental=incremental, extra=extra)
            for disk_backup_id, value in incremental_disks.items():
                q.update_disk_backup(s, disk_backup_id, incremental=value)

    def read_summary(
        self,
        backup_id: str,
        facts: Mapping[str, FileFacts],
        unchanged: Sequence[str],
        bytes_read: int,
    ) -> None:
        """Record what the next backup compares with (each image file's facts), which
        disks were not read because unchanged, and the bytes read."""
        with self._db.write() as s:
            b = q.get_backup(s, backup_id)
            extra = dict(b.extra) if b else {}
            extra["disk_facts"] = {d: f.as_dict() for d, f in facts.items()}
            extra["unchanged_disks"] = list(unchanged)
            extra["bytes_read"] = bytes_read
            q.update_backup(s, backup_id, self._clock.now(), extra=extra)

    def progress(self, backup_id: str, percent: int) -> None:
        with self._db.write() as s:
            q.update_backup(s, backup_id, self._clock.now(), progress=percent)

    def disk_done(
        self,
        disk_backup_id: str,
        *,
        logical: int,
        stored: int,
        new: int,
        reused: int,
        seconds: float,
    ) -> None:
        with self._db.write() as s:
            q.update_disk_backup(
                s,
                disk_backup_id,
                logical_bytes=logical,
                stored_bytes=stored,
                new_bytes=new,
                reused_bytes=reused,
                seconds=seconds,
                status=BackupStatus.AVAILABLE.value,
            )

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        """In the queue's transaction: the backup becomes available, or error with the reason."""
        backup_id = str(task.params.get("backup_id", ""))
        now = self._clock.now()
        with joined_session(conn) as s:
            if task.status is TaskStatus.SUCCESS:
                q.set_status(
                    s, backup_id, BackupStatus.AVAILABLE, now, progress=100, finished_at=now
                )
                q.set_disk_status(s, backup_id, BackupStatus.AVAILABLE)
            else:
                info = task.error_info or {}
                q.set_status(
                    s,
                    backup_id,
                    BackupStatus.ERROR,
                    now,
                    finished_at=now,
                    fail_op="backup",
                    fail_reason=str(info.get("message", "the backup task failed"))[:2000],
                    fail_code=str(info.get("code", "CSBS.9999")),
                )
                q.set_disk_status(s, backup_id, BackupStatus.ERROR)
            s.flush()
