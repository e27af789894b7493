"""The ASGI application: routers, error handlers and request middleware, registered once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

from csbs import __version__
from csbs.api import console
from csbs.api import errors as api_errors
from csbs.api.edge import ApiEdge
from csbs.api.fast_delete import FastDelete
from csbs.api.metrics import ApiMetrics
from csbs.api.middleware import RequestContextMiddleware
from csbs.api.routes import (
    backups,
    health,
    identity,
    operation_logs,
    plans,
    policies,
    protectables,
    providers,
    quotas,
    restores,
    servers,
    tags,
    versions,
    workers,
)
from csbs.services.container import Services


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Route functions block (on the database), so FastAPI runs them on anyio's thread pool,
    # 40 threads by default. Each holds the interpreter lock for most of a call: with more
    # threads than calls that can make progress, they only take the lock from one another,
    # and under load a call waits its turn at random instead of in order (measured with
    # `python -m bench.deletes --api-threads N`, see docs/benchmarks.md).
    edge: ApiEdge = app.state.edge
    anyio.to_thread.current_default_thread_limiter().total_tokens = edge.options.threads
    yield


def create_app(services: Services, edge: ApiEdge) -> FastAPI:
    """Build the HTTP application over `services`, with the edge's options and state."""
    app = FastAPI(
        lifespan=_lifespan,
        title="csbs",
        version=__version__,
        description="Cloud Server Backup Service: the CSBS v1 API and a Keystone v3 subset.",
        default_response_class=JSONResponse,
        docs_url=None,
        redoc_url=None,
    )
    metrics = ApiMetrics()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        metrics.registry.register(collector)
    app.state.services = services
    app.state.edge = edge
    app.state.metrics = metrics
    api_errors.install(app)
    for module in (
        versions,
        health,
        identity,
        providers,
        operation_logs,
        servers,
        backups,
        restores,
        policies,
        plans,
        protectables,
        quotas,
        tags,
        workers,
    ):
        app.include_router(module.router)
    console.install(app)
    # Inside the request context (added later, so it wraps this): request id, draining,
    # body limit, metrics and the log line apply to the fast DELETE as to every call.
    app.add_middleware(FastDelete, services=services)
    app.add_middleware(
        RequestContextMiddleware,
        lifecycle=edge.lifecycle,
        activity=edge.calls,
        max_body_bytes=edge.options.max_body_bytes,
        metrics=metrics,
    )
    return app
