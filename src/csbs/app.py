"""Composition root: builds the engine, services, HTTP app and workers from Settings. No logic.

What only one kind of process needs (the HTTP stack and uvicorn for `csbs serve`, the task
handlers for workers, Alembic for migrations) is imported where it is used, so a command
line that reads or writes a few rows does not load it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

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
from csbs.repository.keys import load_or_create_master_key, parse_master_key
from csbs.services.backups import BackupService
from csbs.services.container import ApiOptions, Services
from csbs.services.deletions import DeletionService
from csbs.services.identity import IdentityService
from csbs.services.inventory import InventoryService
from csbs.services.operation_logs import OperationLogService
from csbs.services.policies import PolicyService
from csbs.services.quotas import QuotaService
from csbs.services.restores import RestoreService
from csbs.services.scheduler import Scheduler
from csbs.services.tags import TagService

if TYPE_CHECKING:
    import argon2

log = logging.getLogger("csbs")


@dataclasses.dataclass
class Runtime:
    """Everything one csbs process runs, built from one Settings object."""

    settings: Settings
    services: Services

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
        settings.effective_database_url, connect_timeout=settings.db_connect_timeout_seconds
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
    quotas = QuotaService(
        db,
        clock,
        Quotas(backups=settings.quota_backups, capacity_gb=settings.quota_capacity_gb),
        lambda project_id: repository.usage(project_id).stored_bytes,
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
        inventory=InventoryService(db, clock, disk_rules),
        backups=backups,
        restores=RestoreService(db, clock, store),
        deletions=deletions,
        policies=PolicyService(db, clock, store, backups, deletions),
        repository=repository,
        disk_rules=disk_rules,
        operation_logs=OperationLogService(store),
        quotas=quotas,
        tags=TagService(db),
        options=ApiOptions(
            region=settings.region,
            public_url=settings.public_url,
            max_body_bytes=settings.max_body_bytes,
            threads=settings.api_threads,
        ),
    )
    return Runtime(settings=settings, services=services)


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


def master_key(settings: Settings) -> bytes:
    """The service master key: inline from settings, or the key file (created on first use)."""
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value())
    return load_or_create_master_key(settings.effective_master_key_file)


def queue_config(settings: Settings) -> QueueConfig:
    return QueueConfig(
        limits={
            OperationType.DELETE: settings.delete_concurrency_per_project,
            OperationType.BACKUP: settings.backup_concurrency_per_project,
            OperationType.RESTORE: settings.restore_concurrency_per_project,
        },
        deadlines={
            OperationType.DELETE: settings.delete_deadline_seconds,
            OperationType.BACKUP: settings.backup_deadline_seconds,
            OperationType.RESTORE: settings.restore_deadline_seconds,
        },
        lease_seconds=settings.task_lease_seconds,
        max_attempts=settings.task_max_attempts,
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
    )


def run_scheduler(runtime: Runtime) -> None:
    """Run the policy scheduler alone until SIGTERM/SIGINT (it leads or stands by)."""
    scheduler = make_scheduler(runtime)
    _run_until_signal(runtime, scheduler.start, scheduler.stop)


def run_worker(runtime: Runtime, worker: Worker) -> None:
    """Run `worker` until SIGTERM/SIGINT, then stop it gracefully (running tasks get the
    shutdown grace to finish; the rest go back to waiting)."""
    _run_until_signal(
        runtime, worker.start, lambda: worker.stop(grace=runtime.settings.shutdown_grace_seconds)
    )


def _run_until_signal(
    runtime: Runtime, start: Callable[[], None], stop: Callable[[], None]
) -> None:
    """start(); wait for SIGTERM/SIGINT; stop(); then close the runtime."""
    stopping = threading.Event()

    def _on_signal(_sig: int, _frame: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    start()
    try:
        stopping.wait()
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runtime.close()


def prepare(runtime: Runtime) -> str | None:
    """Apply migrations and create the admin account; returns a generated admin password."""
    from csbs import migrations

    migrations.upgrade(runtime.services.db.engine)
    # The first set-up records the deployment's repository settings (the chunk size that
    # new projects take), so workers configured otherwise still create projects alike.
    runtime.services.repository.deployment_chunk_size()
    secret = runtime.settings.admin_password
    return runtime.services.identity.bootstrap(secret.get_secret_value() if secret else None)


def serve(runtime: Runtime) -> None:
    """Run the API (and, per settings, the worker process and the scheduler) until
    SIGINT/SIGTERM."""
    import uvicorn

    from csbs.api.app import create_app
    from csbs.worker_process import WorkerProcess

    class _DrainingServer(uvicorn.Server):
        """uvicorn, but the first exit signal marks the service as draining (503 to new
        calls)."""

        def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
            super().__init__(config)
            self._runtime = runtime

        def handle_exit(self, sig: int, frame: Any) -> None:
            self._runtime.services.lifecycle.start_draining()
            # Unlike uvicorn, do not re-raise the signal after shutdown: csbs still has
            # workers to hand back, and then exits 0 as a clean shutdown should.
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    settings = runtime.settings
    runtime.services.identity.prepare_logins()
    app = create_app(runtime.services)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
    )
    server = _DrainingServer(config, runtime)
    worker = (
        WorkerProcess(settings, runtime.services.activity) if settings.embedded_workers else None
    )
    if worker is not None:
        worker.start()
        if runtime.services.db.is_sqlite:
            # SQLite has no notifications: the pipe is what wakes the child at once. On
            # PostgreSQL every enqueue notifies it already; a second wake-up per call would
            # only cost both processes a system call.
            runtime.services.tasks.add_local_waker(worker)
    scheduler = make_scheduler(runtime) if settings.embedded_scheduler else None
    if scheduler is not None:
        scheduler.start()
    log.info("serving", extra={"host": settings.host, "port": settings.port})
    try:
        server.run()
    finally:
        if scheduler is not None:
            scheduler.stop()
        if worker is not None:
            worker.stop(grace=settings.shutdown_grace_seconds)
        runtime.close()
