"""Task handlers: the long operations (backup, restore, delete, maintenance), run by queue
workers."""

from __future__ import annotations

from collections.abc import Mapping

from csbs.domain.operations import OperationType
from csbs.queue import Handler
from csbs.services.container import Services
from csbs.tasks.backup import BackupHandler
from csbs.tasks.delete import DeleteHandler
from csbs.tasks.failures import PlainErrors
from csbs.tasks.maintenance import MaintenanceHandler
from csbs.tasks.restore import RestoreHandler


def handlers(services: Services) -> Mapping[str, Handler]:
    """The handler of every operation type this build of csbs can run."""
    return {
        OperationType.BACKUP: PlainErrors(BackupHandler(services)),
        OperationType.RESTORE: PlainErrors(RestoreHandler(services)),
        OperationType.DELETE: PlainErrors(DeleteHandler(services)),
        OperationType.MAINTENANCE: PlainErrors(MaintenanceHandler(services)),
    }
