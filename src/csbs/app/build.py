"""Building a csbs process from Settings: engine, services, repository, edge state, workers.

No logic: every choice here is a setting passed down as a plain value. What only one kind
of process needs (the task handlers for workers, Alembic for migrations; the HTTP stack is
`serving`'s) is imported where it is used, so a command line that reads or writes a few
rows does not load it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from csbs.api.edge import ApiEdge, ApiOptions
from csbs.app.activity import ApiActivity
from csbs.blobstore import BlobStore
from csbs.blobstore.registry import open_store
from csbs.config import Settings
from csbs.db.engine import Database, create_engine
from csbs.domain.clock import Clock, SystemClock
from csbs.domain.operations import OperationType
from csbs.domain.quotas import Quotas
from csbs.fileio.confined import Rules
from csbs.queue import Handler, QueueConfig, TaskStore, Worker
from csbs.repository import Repository, RepositorySettings
from csbs.repository.deployment import LocalConfig
from csbs.repository.keys import load_or_create_master_key, parse_master_key, read_master_key
from csbs.services.backups import BackupService
from csbs.services.container import Services
from csbs.services.deletions import DeletionService
from csbs.services.identity import IdentityService
from csbs.services.inventory import InventoryService
from csbs.services.maintenance import MaintenanceService
from csbs.services.operation_logs import OperationLogService
from csbs.services.policies import PolicyService
from csbs.services.quotas import QuotaService
from csbs.services.restores import RestoreService
from csbs.services.scheduler import Scheduler
from csbs.services.tags import TagService
from csbs.services.workers import WorkerService

if TYPE_CHECKING:
    import argon2

    from csbs.services.discovery import HostWatcher

log = logging.getLogger("csbs")


@dataclasses.dataclass
class Runtime:
    """Everything one csbs process runs, built from one Settings object: the use cases
    (`services`) and the state of its HTTP edge (`edge`: options, draining, calls in
    flight), which no use case needs."""

    settings: Settings
    services: Services
    edge: ApiEdge
    #: the API's calls in flight, in shared memory (`edge.calls`) for the worker child
    activity: ApiActivity

    def close(self) -> None:
        self.services.db.dispose()


def ensure_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    if not settings.inventory_roots:
        (settings.data_dir / "disks").mkdir(exist_ok=True)


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    password_hasher: argon2.PasswordHasher | None = None,
) -> Runtime:
    """Wire up the services. Does not touch the schema; see `prepare`."""
    ensure_data_dir(settings)
    clock = clock or SystemClock()
    engine = create_engine(
        settings.effective_database_url,
        connect_timeout=settings.db_connect_timeout_seconds,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    db = Database(engine)
    identity = IdentityService(
        db,
        clock,
        token_ttl=dt.timedelta(seconds=settings.token_ttl_seconds),
        token_cache_seconds=settings.token_cache_seconds,
        hasher=password_hasher,
    )
    store = TaskStore(engine, clock, queue_config(settings))
    repository = build_repository(settings, engine, clock)
    maintenance = MaintenanceService(
        store, repository, clock, settings.maintenance_interval_seconds
    )
    quotas = QuotaService(
        db,
        clock,
        Quotas(backups=settings.quota_backups, capacity_gb=settings.quota_capacity_gb),
        lambda project_id: repository.usage(project_id).stored_bytes,
        pending=maintenance.pending,
    )
    disk_rules = Rules(
        roots=tuple(settings.effective_inventory_roots),
        protected=lambda: service_files(settings),
    )
    backups = BackupService(db, clock, store, quotas)
    deletions = DeletionService(db, clock, store)
    services = Services(
        db=db,
        clock=clock,
        identity=identity,
        tasks=store,
        inventory=InventoryService(
            db,
            clock,
            disk_rules,
            store,
            local_host=settings.worker_host or socket.gethostname(),
            check_timeout=settings.disk_check_timeout_seconds,
        ),
        backups=backups,
        restores=RestoreService(db, clock, store),
        deletions=deletions,
        policies=PolicyService(db, clock, store, backups, deletions),
        repository=repository,
        disk_rules=disk_rules,
        operation_logs=OperationLogService(store),
        quotas=quotas,
        tags=TagService(db),
        maintenance=maintenance,
        workers=WorkerService(store),
        libvirt_uri=settings.libvirt_uri,
        vm_scratch_dir=settings.data_dir / "vm-scratch",
    )
    activity = ApiActivity()
    edge = ApiEdge(
        options=ApiOptions(
            region=settings.region,
            public_url=settings.public_url,
            max_body_bytes=settings.max_body_bytes,
            threads=settings.api_threads,
        ),
        calls=activity,
    )
    return Runtime(settings=settings, services=services, edge=edge, activity=activity)


def service_files(settings: Settings) -> list[Path]:
    """Files of the service's own that no disk may be (a hard link to the key, say)."""
    files = [settings.effective_master_key_file]
    url = settings.effective_database_url
    if url.startswith("sqlite:///"):
        db_file = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        files += [db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")]
    return files


def repository_settings(settings: Settings) -> RepositorySettings:
    """The repository's part of the settings: among them what a project's repository is
    created with (its chunk size), so it is the same whichever process creates it."""
    return RepositorySettings(
        chunk_size=settings.chunk_size,
        zstd_level=settings.zstd_level,
        sweep_grace_seconds=settings.sweep_grace_seconds,
        release_refs=settings.release_refs,
    )


def build_repository(
    settings: Settings, engine: sa.Engine, clock: Clock, store: BlobStore | None = None
) -> Repository:
    """The Repository of every csbs process (services, workers, `csbs repo`): on `store`,
    else the one `repository_url` names."""
    return Repository(
        engine,
        store if store is not None else open_store(settings.effective_repository_url),
        clock,
        master_key(settings),
        repository_settings(settings),
    )


def master_key(settings: Settings) -> bytes | None:
    """The service master key: inline from settings, or the key file; None when the file
    does not exist. Only `check_deployment` creates it, when the database names no key."""
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value())
    try:
        return read_master_key(settings.effective_master_key_file)
    except FileNotFoundError:
        return None


def local_deployment(settings: Settings) -> LocalConfig:
    """What this process is configured with, as the deployment check compares it."""
    if settings.master_key is not None:
        source = "the master_key setting (CSBS_MASTER_KEY)"
    else:
        source = f"master_key_file {settings.effective_master_key_file}"
    return LocalConfig(
        repository_url=settings.effective_repository_url,
        master_key=master_key(settings),
        key_source=source,
        create_key=lambda: load_or_create_master_key(settings.effective_master_key_file),
    )


def check_deployment(runtime: Runtime) -> None:
    """Before a process touches data: check that its repository and master key are the
    deployment's its database records, recording them at the first start (or the first
    after an upgrade); raises `DeploymentMismatch` naming the setting that differs. The
    schema must be migrated."""
    repository = runtime.services.repository
    repository.establish_deployment(local_deployment(runtime.settings))
    # The deployment's repository settings (the chunk size that new projects take) are
    # recorded at the first set-up too, so workers configured otherwise create projects alike.
    repository.deployment_chunk_size()


def queue_config(settings: Settings) -> QueueConfig:
    return QueueConfig(
        limits={
            OperationType.DELETE: settings.delete_concurrency_per_project,
            OperationType.BACKUP: settings.backup_concurrency_per_project,
            OperationType.RESTORE: settings.restore_concurrency_per_project,
            # At most one sweep of a project's repository at a time.
            OperationType.MAINTENANCE: 1,
        },
        deadlines={
            OperationType.DELETE: settings.delete_deadline_seconds,
            OperationType.BACKUP: settings.backup_deadline_seconds,
            OperationType.RESTORE: settings.restore_deadline_seconds,
        },
        lease_seconds=settings.task_lease_seconds,
        max_attempts=settings.task_max_attempts,
        worker_stale_seconds=settings.worker_stale_seconds,
        start_deadline_seconds=settings.task_start_deadline_seconds,
        retention_seconds=settings.task_retention_days * 86400.0,
    )


def make_worker(
    runtime: Runtime,
    *,
    concurrency: int | None = None,
    host: str | None = None,
    handlers: Mapping[str, Handler] | None = None,
    api_busy: Callable[[], bool] | None = None,
) -> Worker:
    """A worker over this runtime's queue with the production handlers (or `handlers`);
    `api_busy` tells it when the API beside it is answering calls (embedded workers)."""
    from csbs import __version__
    from csbs import tasks as task_handlers

    settings = runtime.settings
    return Worker(
        runtime.services.tasks,
        handlers if handlers is not None else task_handlers.handlers(runtime.services),
        clock=runtime.services.clock,
        concurrency=concurrency or settings.worker_concurrency,
        host=host or settings.worker_host,
        idle_poll=settings.worker_idle_poll_seconds,
        api_busy=api_busy,
        busy_claim_interval=settings.worker_busy_claim_seconds,
        version=__version__,
    )


def make_host_watcher(runtime: Runtime, host: str) -> HostWatcher | None:
    """What keeps the inventory in step with this host's libvirt (servers of `host`), or
    None where `libvirt_uri` is off, or `auto` and libvirt does not answer."""
    from csbs.hypervisor.connection import resolve_uri
    from csbs.services.discovery import HostWatcher

    settings = runtime.settings
    uri = resolve_uri(settings.libvirt_uri)
    if uri is None:
        return None
    return HostWatcher(
        runtime.services.db,
        runtime.services.clock,
        host,
        uri,
        resync_seconds=settings.libvirt_resync_seconds,
    )


def make_scheduler(runtime: Runtime) -> Scheduler:
    settings = runtime.settings
    services = runtime.services
    return Scheduler(
        services.db,
        services.clock,
        services.policies,
        tick_seconds=settings.scheduler_tick_seconds,
        lease_seconds=settings.scheduler_lease_seconds,
        maintenance=services.maintenance,
    )


def prepare(runtime: Runtime) -> str | None:
    """Apply migrations, check the deployment's identity (`check_deployment`) and create
    the admin account; returns a generated admin password."""
    from csbs import migrations

    migrations.upgrade(runtime.services.db.engine)
    check_deployment(runtime)
    secret = runtime.settings.admin_password
    return runtime.services.identity.bootstrap(secret.get_secret_value() if secret else None)
