"""Restores: writing a backup onto a server's disks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum


class RestoreStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAIL = "fail"


@dataclasses.dataclass(frozen=True)
class VolumeMapping:
    #: a disk backup of the backup (extend_info.volume_backups[].id)
    backup_id: str
    #: a disk of the target server
    volume_id: str


@dataclasses.dataclass(frozen=True)
class Restore:
    id: str
    project_id: str
    provider_id: str
    checkpoint_id: str
    backup_id: str
    server_id: str
    power_on: bool
    restore_target: str | None
    mappings: tuple[VolumeMapping, ...]
    status: RestoreStatus
    reason: str
    task_id: str | None
    created_at: dt.datetime
    ended_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class RestoreFilter:
    """Which restores a list takes; None means "any"."""

    project_id: str | None = None
    status: RestoreStatus | None = None
