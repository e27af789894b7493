"""The task record and its states."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from csbs.domain.operations import TaskStatus as TaskStatus  # its home is the domain


@dataclasses.dataclass(frozen=True)
class Refs:
    """What a task is about; any of these may be None."""

    provider_id: str | None = None
    checkpoint_id: str | None = None
    checkpoint_item_id: str | None = None
    plan_id: str | None = None
    restore_id: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None


@dataclasses.dataclass(frozen=True)
class EnqueueRequest:
    """A task to create."""

    project_id: str
    operation_type: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    refs: Refs = Refs()
    #: Only a worker started with this host name may run it; None = any worker.
    route: str | None = None
    #: Seconds from the first start to the deadline; None = the type's default.
    deadline_seconds: float | None = None
    task_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    seq: int
    id: str
    project_id: str
    operation_type: str
    status: TaskStatus
    params: Mapping[str, Any]
    refs: Refs
    progress: int
    extra_info: Mapping[str, Any]
    error_info: Mapping[str, Any] | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    deadline_seconds: float
    route: str | None
    cancel_requested: bool
    #: attempts ended by a lost worker or database, not by the task (see `failures`)
    interruptions: int = 0

    @classmethod
    def from_row(cls, row: Any) -> Task:
        m = row._mapping
        return cls(
            seq=m["seq"],
            id=m["id"],
            project_id=m["project_id"],
            operation_type=m["operation_type"],
            status=TaskStatus(m["status"]),
            params=m["params"] or {},
            refs=Refs(
                provider_id=m["provider_id"],
                checkpoint_id=m["checkpoint_id"],
                checkpoint_item_id=m["checkpoint_item_id"],
                plan_id=m["plan_id"],
                restore_id=m["restore_id"],
                resource_id=m["resource_id"],
                resource_name=m["resource_name"],
            ),
            progress=m["progress"],
            extra_info=m["extra_info"] or {},
            error_info=m["error_info"],
            created_at=m["created_at"],
            started_at=m["started_at"],
            ended_at=m["ended_at"],
            attempts=m["attempts"],
            max_attempts=m["max_attempts"],
            lease_owner=m["lease_owner"],
            lease_expires_at=m["lease_expires_at"],
            deadline_seconds=m["deadline_seconds"],
            route=m["route"],
            cancel_requested=m["cancel_requested"],
            interruptions=m["interruptions"],
        )

    @property
    def failures(self) -> int:
        """Attempts that count toward `max_attempts`: those the task itself ended."""
        return self.attempts - self.interruptions

    @property
    def deadline_at(self) -> dt.datetime | None:
        """The deadline runs from the first start and survives retries and crashes."""
        if self.started_at is None:
            return None
        return self.started_at + dt.timedelta(seconds=self.deadline_seconds)


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


def error_info(code: str, message: str) -> dict[str, str]:
    """The `error_info` object of a failed task."""
    return {"code": code, "message": message}
