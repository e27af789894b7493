"""Per-project quotas (CSBS Q1): how many backups a project keeps and how much they store."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from csbs.domain import errors

UNLIMITED = -1
#: One GB of `backup_capacity` is 2**30 bytes, as disk sizes elsewhere in the API.
GB = 2**30
#: `used` of `backup_capacity` is reported in GB rounded to this many decimals (~1 KB).
CAPACITY_DECIMALS = 6
#: The largest quota that can be set (either resource).
MAX_QUOTA = 2**31 - 1

BACKUPS = "backups"
BACKUP_CAPACITY = "backup_capacity"


@dataclasses.dataclass(frozen=True)
class Quotas:
    """A project's limits; -1 = unlimited."""

    backups: int
    capacity_gb: int


@dataclasses.dataclass(frozen=True)
class QuotaUsage:
    quotas: Quotas
    backups: int
    stored_bytes: int
    #: Bytes of chunks no backup references any more, released by the next sweeps.
    pending_release_bytes: int = 0
    #: When they will have been released at the latest; None when nothing is pending.
    release_by: dt.datetime | None = None

    @property
    def capacity_gb(self) -> float:
        return round(self.stored_bytes / GB, CAPACITY_DECIMALS)


def check_quota(name: str, value: int) -> int:
    """-1 (unlimited) or 0..2**31-1."""
    if isinstance(value, bool) or not (value == UNLIMITED or 0 <= value <= MAX_QUOTA):
        raise errors.InvalidInput(f"{name} must be -1 (unlimited) or 0 to {MAX_QUOTA}")
    return value


def exceeded(usage: QuotaUsage, new_backups: int) -> list[str]:
    """The resources that `new_backups` more backups would exceed.

    `backups`: the retained backups plus the new ones must stay within the quota.
    `backup_capacity`: refused once the stored data has reached the quota; a backup that
    runs past it finishes, and the next one is refused.
    """
    out = []
    q = usage.quotas
    if q.backups != UNLIMITED and usage.backups + new_backups > q.backups:
        out.append(BACKUPS)
    if q.capacity_gb != UNLIMITED and usage.stored_bytes >= q.capacity_gb * GB:
        out.append(BACKUP_CAPACITY)
    return out


class ProjectNotFound(errors.NotFound):
    """The project does not exist."""

    def __init__(self, project_id: str) -> None:
        super().__init__(f"Project ({project_id}) is not found.")


def quota_exceeded(resources: Sequence[str]) -> errors.QuotaExceeded:
    return errors.QuotaExceeded(f"Quota exceeded for resources: {', '.join(resources)}")
