"""The use cases the edges (HTTP, CLI, workers) are handed by the composition root; the
edges' own state (HTTP options, draining) is theirs (`csbs.api.edge`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from csbs.db.engine import Database
from csbs.domain.clock import Clock
from csbs.fileio.confined import Rules
from csbs.queue import TaskStore
from csbs.repository import Repository
from csbs.services.backups import BackupService
from csbs.services.deletions import DeletionService
from csbs.services.identity import IdentityService
from csbs.services.inventory import InventoryService
from csbs.services.maintenance import MaintenanceService
from csbs.services.operation_logs import OperationLogService
from csbs.services.policies import PolicyService
from csbs.services.quotas import QuotaService
from csbs.services.restores import RestoreService
from csbs.services.tags import TagService
from csbs.services.workers import WorkerService


@dataclasses.dataclass(frozen=True)
class Services:
    db: Database
    clock: Clock
    identity: IdentityService
    tasks: TaskStore
    inventory: InventoryService
    backups: BackupService
    restores: RestoreService
    deletions: DeletionService
    policies: PolicyService
    repository: Repository
    #: where disks may be opened, and which files never (`csbs.fileio.confined`)
    disk_rules: Rules
    operation_logs: OperationLogService
    quotas: QuotaService
    tags: TagService
    maintenance: MaintenanceService
    workers: WorkerService
    #: the host's libvirt for backups and restores of its domains (`auto`, `off` or a URI)
    libvirt_uri: str = "off"
    #: where a VM backup's scratch files and NBD socket go (None: the system's temp dir)
    vm_scratch_dir: Path | None = None
