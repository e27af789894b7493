"""Operations: the kinds of long operation that become tasks, their states, and the
filters of their list (the operation logs)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum


class OperationType(enum.StrEnum):
    #: back up one server's disks into the repository
    BACKUP = "backup"
    #: write a backup onto a server's disks
    RESTORE = "restore"
    #: drop one backup and reclaim its space
    DELETE = "delete"
    #: sweep a project's repository: release the chunks no backup references any more
    MAINTENANCE = "maintenance"


class TaskStatus(enum.StrEnum):
    #: accepted, waiting for a worker and a free slot in its project
    WAITING = "waiting"
    #: claimed by a worker that holds its lease
    RUNNING = "running"
    #: the handler finished
    SUCCESS = "success"
    #: the handler failed, or the task ran out of attempts
    FAILED = "failed"
    #: the task passed its deadline
    TIMEOUT = "timeout"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.TIMEOUT)


#: Karbor's operation types that name one of ours (spec §11.18).
KARBOR_TYPES = {"protect": OperationType.BACKUP}
#: Karbor's operation-log statuses as ours, with the one type a status implies, if any
#: ("available" is a finished protect, "deleted" a finished delete).
KARBOR_STATUSES: dict[str, tuple[TaskStatus, OperationType | None]] = {
    "available": (TaskStatus.SUCCESS, OperationType.BACKUP),
    "deleted": (TaskStatus.SUCCESS, OperationType.DELETE),
    "protecting": (TaskStatus.RUNNING, OperationType.BACKUP),
    "restoring": (TaskStatus.RUNNING, OperationType.RESTORE),
    "deleting": (TaskStatus.RUNNING, OperationType.DELETE),
    "in_progress": (TaskStatus.RUNNING, None),
    "error": (TaskStatus.FAILED, None),
    "fail": (TaskStatus.FAILED, None),
}


@dataclasses.dataclass(frozen=True)
class TaskFilter:
    """Filters of the task list; None means "any"."""

    project_id: str | None = None
    operation_type: str | None = None
    status: TaskStatus | None = None
    checkpoint_id: str | None = None
    checkpoint_item_id: str | None = None
    plan_id: str | None = None
    resource_id: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
