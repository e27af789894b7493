"""The set of services the edges (HTTP, CLI, workers) are handed by the composition root."""

from __future__ import annotations

import dataclasses
import threading

from csbs.db.engine import Database
from csbs.domain.clock import Clock
from csbs.fileio.confined import Rules
from csbs.queue import TaskStore
from csbs.repository import Repository
from csbs.services.activity import ApiActivity
from csbs.services.backups import BackupService
from csbs.services.deletions import DeletionService
from csbs.services.identity import IdentityService
from csbs.services.inventory import InventoryService
from csbs.services.operation_logs import OperationLogService
from csbs.services.policies import PolicyService
from csbs.services.quotas import QuotaService
from csbs.services.restores import RestoreService
from csbs.services.tags import TagService


@dataclasses.dataclass(frozen=True)
class ApiOptions:
    """What the HTTP layer needs to know about its deployment."""

    region: str
    public_url: str | None
    max_body_bytes: int
    #: threads that run the route functions (which block on the database)
    threads: int


class Lifecycle:
    """Whether the process is draining for shutdown; readable from every thread."""

    def __init__(self) -> None:
        self._draining = threading.Event()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start_draining(self) -> None:
        self._draining.set()


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
    options: ApiOptions
    lifecycle: Lifecycle = dataclasses.field(default_factory=Lifecycle)
    #: Calls in flight in this process's API (shared with the embedded worker process).
    activity: ApiActivity = dataclasses.field(default_factory=ApiActivity)
