"""Backup records (checkpoints), backups of one server (checkpoint items) and disk backups."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import secrets
from collections.abc import Sequence
from typing import Any

from csbs.domain import errors


class BackupStatus(enum.StrEnum):
    """Status of one server's backup (spec §7.1)."""

    WAITING_PROTECT = "waiting_protect"
    PROTECTING = "protecting"
    AVAILABLE = "available"
    WAITING_RESTORE = "waiting_restore"
    RESTORING = "restoring"
    ERROR = "error"
    WAITING_DELETE = "waiting_delete"
    DELETING = "deleting"
    DELETED = "deleted"


#: States in which a backup is busy: no new backup, restore or deletion may start on it.
BUSY = frozenset(
    {
        BackupStatus.WAITING_PROTECT,
        BackupStatus.PROTECTING,
        BackupStatus.WAITING_RESTORE,
        BackupStatus.RESTORING,
        BackupStatus.WAITING_DELETE,
        BackupStatus.DELETING,
    }
)
DELETABLE = frozenset({BackupStatus.AVAILABLE, BackupStatus.ERROR})

#: Consistency a backup obtained, recorded in extend_info.
CONSISTENCY_APP = "app_consistent"  # a VM whose guest agent froze its file systems
CONSISTENCY_CRASH = "crash_consistent"  # a point-in-time clone of the image was read
CONSISTENCY_NONE = "inconsistent"  # the live image was read while it may change

#: A file changed later than this before its facts were taken may change again within
#: the same timestamp tick without its times moving: it is read again next time.
RACY_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class FileFacts:
    """What says an image file is unchanged: size, modification and change times (ns),
    inode and device, taken from its descriptor before it is read, and when (`taken_ns`,
    the clock's time then)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    taken_ns: int = 0

    @classmethod
    def of(cls, st: Any, taken_ns: int) -> FileFacts:
        """From an `os.stat_result` of a regular file."""
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, taken_ns)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> FileFacts | None:
        """Facts recorded by an earlier backup; None when absent or not well formed."""
        if not isinstance(raw, dict):
            return None
        try:
            return cls(**{f.name: int(raw[f.name]) for f in dataclasses.fields(cls)})
        except (KeyError, TypeError, ValueError):
            return None

    def unchanged_since(self, previous: FileFacts) -> bool:
        """The five facts equal the previous backup's, and the previous backup did not
        take them while the file was still being written (within `RACY_SECONDS` of
        either time): then the file holds what that backup read."""
        same = (self.size, self.mtime_ns, self.ctime_ns, self.inode, self.device) == (
            previous.size,
            previous.mtime_ns,
            previous.ctime_ns,
            previous.inode,
            previous.device,
        )
        settled = previous.taken_ns - max(previous.mtime_ns, previous.ctime_ns) > int(
            RACY_SECONDS * 1e9
        )
        return same and settled


_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9_-]{0,43}$")
MAX_TAGS = 10


@dataclasses.dataclass(frozen=True)
class Tag:
    key: str
    value: str


@dataclasses.dataclass(frozen=True)
class DiskBackup:
    id: str
    backup_id: str
    disk_id: str
    disk_name: str
    device_name: str
    bootable: bool
    source_size: int
    status: BackupStatus
    logical_bytes: int = 0
    stored_bytes: int = 0
    new_bytes: int = 0
    reused_bytes: int = 0
    incremental: bool = False
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Backup:
    """One server's backup within a backup record (a CSBS checkpoint item)."""

    id: str
    checkpoint_id: str
    project_id: str
    name: str
    description: str
    resource_id: str
    resource_name: str
    resource_type: str
    status: BackupStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    protected_at: dt.datetime | None
    finished_at: dt.datetime | None
    plan_id: str | None
    auto_trigger: bool
    incremental: bool
    progress: int
    consistency: str
    fail_op: str
    fail_reason: str
    fail_code: str
    task_id: str | None
    extra: dict[str, Any]
    tags: tuple[Tag, ...]
    disks: tuple[DiskBackup, ...]

    @property
    def logical_bytes(self) -> int:
        return sum(d.logical_bytes for d in self.disks)

    @property
    def new_bytes(self) -> int:
        return sum(d.new_bytes for d in self.disks)


@dataclasses.dataclass(frozen=True)
class BackupRef:
    """What deleting a backup needs of it (read without its disks and tags)."""

    id: str
    project_id: str
    checkpoint_id: str
    status: BackupStatus
    plan_id: str | None
    resource_id: str
    resource_name: str


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A backup record: one run, holding one backup per server (a CSBS checkpoint)."""

    id: str
    project_id: str
    plan_id: str
    plan_name: str
    status: BackupStatus
    created_at: dt.datetime
    created_by: str
    resources: tuple[tuple[str, str], ...]  # (server id, server name)


#: Karbor's checkpoint statuses (spec §11.18): a list may ask for any of them; records here
#: are only ever the first four, so the others answer nothing rather than a 400.
CHECKPOINT_STATUSES = ("available", "protecting", "deleting", "error", "deleted", "error-deleting")


@dataclasses.dataclass(frozen=True)
class CheckpointFilter:
    """Which backup records (Karbor checkpoints) a list takes; None means "any"."""

    project_id: str | None = None
    plan_id: str | None = None
    #: one of CHECKPOINT_STATUSES: the record's status as `checkpoint_status` derives it
    status: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None


def checkpoint_status(items: Sequence[BackupStatus]) -> BackupStatus:
    """A record's status from its backups': busy if any is, else error if any is."""
    for busy in (BackupStatus.PROTECTING, BackupStatus.WAITING_PROTECT):
        if busy in items:
            return BackupStatus.PROTECTING
    if BackupStatus.DELETING in items or BackupStatus.WAITING_DELETE in items:
        return BackupStatus.DELETING
    if BackupStatus.ERROR in items:
        return BackupStatus.ERROR
    return BackupStatus.AVAILABLE


def check_name(name: Any, field: str = "name") -> str:
    """A CSBS name (backups, policies, operations): 1-255 of [A-Za-z0-9_-]."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise errors.InvalidInput(f"{field} must be 1-255 characters of [A-Za-z0-9_-]")
    return name


def check_backup_name(name: str) -> str:
    return check_name(name, "backup_name")


def check_description(text: Any, field: str = "description") -> str:
    """A CSBS description: at most 255 characters, without < or >; None is empty."""
    if text is None:
        return ""
    if not isinstance(text, str) or len(text) > 255 or "<" in text or ">" in text:
        raise errors.InvalidInput(f"{field} must be at most 255 characters, without < or >")
    return text


def too_many_tags() -> errors.InvalidInput:
    """400 CSBS.7000: more than `MAX_TAGS` tags in a request or on a resource."""
    return errors.InvalidInput(
        f"request tags exceed the max allowed count: {MAX_TAGS}.", code="CSBS.7000"
    )


def check_tags(tags: Sequence[tuple[str, str]]) -> tuple[Tag, ...]:
    """Tags given at creation: non-empty if present, at most 10, unique keys, charset rules."""
    if len(tags) > MAX_TAGS:
        raise too_many_tags()
    out: list[Tag] = []
    for key, value in tags:
        key, value = key.strip(), value.strip()
        if not _TAG_KEY_RE.match(key):
            raise errors.InvalidInput("tag key must be 1-36 characters of [A-Za-z0-9_-]")
        if not _TAG_VALUE_RE.match(value):
            raise errors.InvalidInput("tag value must be 0-43 characters of [A-Za-z0-9_-]")
        if any(t.key == key for t in out):
            raise errors.InvalidInput(f"tag key {key!r} is given twice")
        out.append(Tag(key, value))
    return tuple(out)


def default_name(prefix: str = "manualbk") -> str:
    """`manualbk_xxxx` (4 hex characters), as CSBS names manual backups."""
    return f"{prefix}_{secrets.token_hex(2)}"


class BackupBusy(errors.InvalidState):
    """item in executing"""

    code = "CSBS.2003"


class BackupRunning(errors.Conflict):
    """The server is being backed up."""

    code = "CSBS.1001"


class CheckpointNotFound(errors.NotFound):
    """Checkpoint is not found."""

    code = "CSBS.3001"

    def __init__(self, checkpoint_id: str) -> None:
        super().__init__(f"Checkpoint ({checkpoint_id}) is not found.")


@dataclasses.dataclass(frozen=True)
class BackupFilter:
    """Which backups a list or count takes (B4, B5, the CLI); None means "any"."""

    project_id: str | None = None
    status: str | None = None
    name: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    resource_type: str | None = None
    checkpoint_id: str | None = None
    plan_id: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    #: set when a filter can match nothing here (e.g. an unknown AZ or image type)
    impossible: bool = False
    include_deleted: bool = False
    #: (key, value) tags the backup must all carry
    tags: tuple[Tag, ...] = ()
