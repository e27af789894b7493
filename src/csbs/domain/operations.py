"""Operation types: the kinds of long operation that become tasks, and a task's states."""

from __future__ import annotations

import enum


class OperationType(enum.StrEnum):
    #: back up one server's disks into the repository
    BACKUP = "backup"
    #: write a backup onto a server's disks
    RESTORE = "restore"
    #: drop one backup and reclaim its space
    DELETE = "delete"


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
