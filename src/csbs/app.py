"""Composition root: builds the engine, services, HTTP app and workers from Settings. No logic."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
from typing import Any

import argon2
import uvicorn

from csbs import migrations
from csbs.api.app import create_app
from csbs.config import Settings
from csbs.db.engine import Database, create_engine
from csbs.domain.clock import Clock, SystemClock
from csbs.services.container import ApiOptions, Services
from csbs.services.identity import IdentityService

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
        hasher=password_hasher,
    )
    services = Services(
        db=db,
        clock=clock,
        identity=identity,
        options=ApiOptions(
            region=settings.region,
            public_url=settings.public_url,
            max_body_bytes=settings.max_body_bytes,
        ),
    )
    return Runtime(settings=settings, services=services)


def prepare(runtime: Runtime) -> str | None:
    """Apply migrations and create the admin account; returns a generated admin password."""
    migrations.upgrade(runtime.services.db.engine)
    secret = runtime.settings.admin_password
    return runtime.services.identity.bootstrap(secret.get_secret_value() if secret else None)


class _DrainingServer(uvicorn.Server):
    """uvicorn, but the first exit signal marks the service as draining (503 to new calls)."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._runtime.services.lifecycle.start_draining()
        # Unlike uvicorn, do not re-raise the signal after shutdown: csbs still has workers
        # to hand back, and then exits 0 as a clean shutdown should.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def serve(runtime: Runtime) -> None:
    """Run the API (and, per settings, the embedded workers) until SIGINT/SIGTERM."""
    settings = runtime.settings
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
    log.info("serving", extra={"host": settings.host, "port": settings.port})
    try:
        server.run()
    finally:
        runtime.close()
