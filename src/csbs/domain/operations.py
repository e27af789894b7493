"""Operation types: the kinds of long operation that become tasks."""

from __future__ import annotations

import enum


class OperationType(enum.StrEnum):
    #: back up one server's disks into the repository
    BACKUP = "backup"
    #: write a backup onto a server's disks
    RESTORE = "restore"
    #: drop one backup and reclaim its space
    DELETE = "delete"
