"""`csbs serve`: the API server, with its worker child and scheduler, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import socket
from typing import Any

import uvicorn

from csbs.api.app import create_app
from csbs.app.build import Runtime, make_scheduler
from csbs.app.control import ControlProtocol, ControlSocket
from csbs.app.worker_child import WorkerProcess

log = logging.getLogger("csbs")


class _DrainingServer(uvicorn.Server):
    """uvicorn, but the first exit signal marks the service as draining (503 to new calls),
    and it answers on the control socket too (decision 0018)."""

    def __init__(
        self, config: uvicorn.Config, runtime: Runtime, control: socket.socket | None
    ) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._control = control

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn binds the TCP port as configured (every address of the host name); the
        # control socket is served beside it by the same protocol, so it shares the
        # application, the draining and the graceful shutdown (which closes `servers`).
        await super().startup(sockets=sockets)
        if self.should_exit or self._control is None:
            return
        protocol = functools.partial(
            ControlProtocol,
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        loop = asyncio.get_running_loop()
        self.servers.append(
            await loop.create_server(protocol, sock=self._control, backlog=self.config.backlog)
        )

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._runtime.edge.lifecycle.start_draining()
        # Unlike uvicorn, do not re-raise the signal after shutdown: csbs still has workers
        # to hand back, and then exits 0 as a clean shutdown should.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def serve(runtime: Runtime) -> None:
    """Run the API (and, per settings, the worker process and the scheduler) until
    SIGINT/SIGTERM."""
    settings = runtime.settings
    runtime.services.identity.prepare_logins()
    app = create_app(runtime.services, runtime.edge)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
        # uvicorn's protocol, which checks who connects to the control socket (decision 0018)
        http=ControlProtocol,
    )
    control = ControlSocket(settings.control_socket)
    worker = WorkerProcess(settings, runtime.activity) if settings.embedded_workers else None
    if worker is not None:
        worker.start()
        if runtime.services.db.is_sqlite:
            # SQLite has no notifications: the pipe is what wakes the child at once. On
            # PostgreSQL every enqueue notifies it already; a second wake-up per call would
            # only cost both processes a system call.
            # Only for tasks its host may take (routed to no host, or to its own).
            host = settings.worker_host or socket.gethostname()
            runtime.services.tasks.add_local_waker(worker, host)
    scheduler = make_scheduler(runtime) if settings.embedded_scheduler else None
    if scheduler is not None:
        scheduler.start()
    # What start-up built lives as long as the process: out of the collector's sight, a
    # full collection no longer walks it, and the pauses it made (a tail of tens of ms
    # for calls that arrive then) go (decision 0011).
    gc.collect()
    gc.freeze()
    try:
        control_socket = control.open()
        server = _DrainingServer(config, runtime, control_socket)
        log.info(
            "serving",
            extra={
                "host": settings.host,
                "port": settings.port,
                "control_socket": str(control.path) if control_socket is not None else None,
            },
        )
        server.run()
    finally:
        control.remove()
        if scheduler is not None:
            scheduler.stop()
        if worker is not None:
            worker.stop(grace=settings.shutdown_grace_seconds)
        runtime.close()
