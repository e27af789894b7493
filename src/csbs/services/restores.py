"""Restoring a backup onto a server's disks (CSBS S1, R3, K2)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db.engine import Database, joined_session
from csbs.db.queries import backups as bq
from csbs.db.queries import inventory as inv
from csbs.db.queries import restores as q
from csbs.domain import errors
from csbs.domain.backups import Backup, BackupStatus
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.inventory import SERVER_TYPE, Server, ServerNotFound, ServerStatus
from csbs.domain.operations import OperationType
from csbs.domain.paging import Page, PageRequest
from csbs.domain.providers import CSBS_PROVIDER_ID
from csbs.domain.restores import Restore, RestoreFilter, RestoreStatus, VolumeMapping
from csbs.queue import EnqueueRequest, Task, TaskStatus, TaskStore
from csbs.queue.jobs import Refs
from csbs.services.backups import Capability


@dataclasses.dataclass(frozen=True)
class RestoreRequest:
    checkpoint_id: str
    backup_id: str
    server_id: str
    mappings: Sequence[VolumeMapping]
    power_on: bool = False
    restore_target: str | None = None
    resource_type: str = SERVER_TYPE


def _bad(code: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, code=code)


class RestoreNotFound(errors.NotFound):
    """restore not found"""

    code = "CSBS.9001"


class RestoreService:
    def __init__(self, db: Database, clock: Clock, tasks: TaskStore) -> None:
        self._db = db
        self._clock = clock
        self._tasks = tasks

    def _validate(
        self, s: orm.Session, project_id: str, req: RestoreRequest, *, lock: bool
    ) -> tuple[Backup, Server]:
        """All checks of spec §4.14, in the order a caller can fix them."""
        if req.resource_type != SERVER_TYPE:
            raise _bad(
                "CSBS.6013",
                f"Resource ({req.server_id}) type ({req.resource_type}) "
                "is not support restoration.",
            )
        backup = bq.get_backup(s, req.backup_id, for_update=lock)
        if (
            backup is None
            or backup.project_id != project_id
            or backup.checkpoint_id != req.checkpoint_id
        ):
            raise errors.BackupNotFound(req.backup_id)
        if backup.status is not BackupStatus.AVAILABLE:
            raise _bad("CSBS.4000", "checkpoint item not available")
        server = inv.get_server(s, req.server_id, for_update=lock)
        if server is None or server.project_id != project_id:
            raise ServerNotFound(req.server_id)
        if not server.disks:
            raise _bad("CSBS.6020", f"No volume attached to the server ({server.id}) for restore.")
        if q.server_restoring(s, server.id):
            raise _bad("CSBS.6015", "The server is restoring.")
        if server.status is not ServerStatus.STOPPED:
            raise _bad(
                "CSBS.6006",
                f"Server ({server.id}) status ({server.status.value}) is not allowed to restore; "
                "stop it first.",
            )
        disk_backups = {d.id: d for d in backup.disks}
        target_disks = {d.id: d for d in server.disks}
        unknown = [m.backup_id for m in req.mappings if m.backup_id not in disk_backups]
        if unknown:
            raise _bad(
                "CSBS.6017",
                f"Can not find backup(s) ({', '.join(unknown)}) in checkpoint item ({backup.id}).",
            )
        missing = [m.volume_id for m in req.mappings if m.volume_id not in target_disks]
        if missing:
            raise _bad("CSBS.6014", f"Volume(s) ({', '.join(missing)}) not found in target server.")
        mapped = [m.backup_id for m in req.mappings]
        if len(set(mapped)) != len(mapped):
            raise errors.InvalidInput("a disk backup is mapped twice")
        targets = [m.volume_id for m in req.mappings]
        if len(set(targets)) != len(targets):
            raise errors.InvalidInput("a target disk is given twice")
        unmapped = [i for i in disk_backups if i not in set(mapped)]
        if unmapped:
            raise _bad(
                "CSBS.6018",
                f"Not assign backup(s) ({', '.join(unmapped)}) to volume(s), "
                "partial restore is not supported.",
            )
        pairs = [(disk_backups[m.backup_id], target_disks[m.volume_id]) for m in req.mappings]
        for source, target in pairs:
            if not source.bootable and target.bootable:
                raise _bad(
                    "CSBS.6023",
                    f"Can not restore data volume to system volume. server id is ({server.id}).",
                )
        for source, target in pairs:
            if target.size_bytes < source.source_size:
                raise _bad(
                    "CSBS.6024",
                    f"Target volume ({target.id}) size ({target.size_bytes}) small than volume "
                    f"backup ({source.id}) size ({source.source_size}).",
                )
        return backup, server

    def check_restorable(
        self, project_id: str, items: Sequence[tuple[str, str, str, Sequence[tuple[str, str]]]]
    ) -> list[Capability]:
        out = []
        with self._db.read() as s:
            for backup_id, server_id, resource_type, volumes in items:
                backup = bq.get_backup(s, backup_id)
                req = RestoreRequest(
                    checkpoint_id=backup.checkpoint_id if backup else "",
                    backup_id=backup_id,
                    server_id=server_id,
                    mappings=[VolumeMapping(b, v) for b, v in volumes],
                    resource_type=resource_type,
                )
                try:
                    self._validate(s, project_id, req, lock=False)
                    out.append(Capability(server_id, resource_type, True))
                except errors.CsbsError as e:
                    out.append(Capability(server_id, resource_type, False, e.code, e.message))
        return out

    def restore(self, project_id: str, req: RestoreRequest) -> Restore:
        """Accept a restore: the backup goes `waiting_restore`, a task writes the disks."""
        now = self._clock.now()
        with self._db.write() as s:
            backup, server = self._validate(s, project_id, req, lock=True)
            restore = Restore(
                id=new_id(),
                project_id=project_id,
                provider_id=CSBS_PROVIDER_ID,
                checkpoint_id=req.checkpoint_id,
                backup_id=backup.id,
                server_id=server.id,
                power_on=req.power_on,
                restore_target=req.restore_target,
                mappings=tuple(req.mappings),
                status=RestoreStatus.IN_PROGRESS,
                reason="",
                task_id=new_id(),
                created_at=now,
                ended_at=None,
            )
            q.add(s, restore)
            bq.set_status(s, backup.id, BackupStatus.WAITING_RESTORE, now)
            self._tasks.enqueue(
                s.connection(),
                EnqueueRequest(
                    project_id=project_id,
                    operation_type=OperationType.RESTORE,
                    params={"restore_id": restore.id},
                    refs=Refs(
                        provider_id=CSBS_PROVIDER_ID,
                        checkpoint_id=req.checkpoint_id,
                        checkpoint_item_id=backup.id,
                        restore_id=restore.id,
                        resource_id=server.id,
                        resource_name=server.name,
                    ),
                    route=server.host,
                    task_id=restore.task_id,
                ),
            )
        self._tasks.poke(server.host)
        return restore

    def get(self, project_id: str | None, restore_id: str) -> Restore:
        """A restore of `project_id` (None: any project)."""
        with self._db.read() as s:
            r = q.get(s, restore_id)
        if r is None or (project_id is not None and r.project_id != project_id):
            raise RestoreNotFound(f"Restore ({restore_id}) is not found.")
        return r

    def restores(self, f: RestoreFilter, page: PageRequest) -> Page[Restore]:
        with self._db.read() as s:
            return q.search(s, f, page)


SORT_KEYS = frozenset({"created_at", "ended_at", "status", "id"})
DEFAULT_SORT = "created_at:desc"


class RestoreRecorder:
    """The restore task's hooks: statuses change in the queue's transaction."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        with joined_session(conn) as s:
            r = q.get(s, str(task.params["restore_id"]))
            if r is not None:
                bq.set_status(s, r.backup_id, BackupStatus.RESTORING, self._clock.now())
            s.flush()

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        now = self._clock.now()
        with joined_session(conn) as s:
            r = q.get(s, str(task.params["restore_id"]))
            if r is None:
                return
            if task.status is TaskStatus.SUCCESS:
                q.finish(s, r.id, RestoreStatus.SUCCESS, "", now)
                if r.power_on:
                    inv.set_status(s, r.server_id, ServerStatus.RUNNING)
            else:
                info = task.error_info or {}
                q.finish(
                    s, r.id, RestoreStatus.FAIL, str(info.get("message", "restore failed")), now
                )
            # The backup is untouched by a restore either way: it is available again.
            bq.set_status(s, r.backup_id, BackupStatus.AVAILABLE, now)
            s.flush()
