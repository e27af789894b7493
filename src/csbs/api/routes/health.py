"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from csbs.api.deps import EdgeDep, ServicesDep
from csbs.domain import errors

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the metadata database answers and we are not draining")
def readyz(services: ServicesDep, edge: EdgeDep) -> dict[str, str]:
    if edge.lifecycle.draining:
        raise errors.ServiceUnavailable("The service is shutting down.")
    services.db.ping()
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
