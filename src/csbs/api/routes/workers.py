"""The deployment's task workers (admin): which are alive, on which hosts (our extension)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from csbs.api.deps import PrincipalDep, ServicesDep
from csbs.api.schemas.common import timestamp
from csbs.domain import errors
from csbs.domain.workers import WorkerInfo

router = APIRouter(tags=["operations"])


def worker_body(w: WorkerInfo) -> dict[str, Any]:
    return {
        "id": w.id,
        "host": w.host,
        "version": w.version,
        "pid": w.pid,
        "slots": w.slots,
        "running": w.running,
        "started_at": timestamp(w.started_at),
        "heartbeat_at": timestamp(w.heartbeat_at),
        "alive": w.alive,
    }


@router.get("/v3/workers", summary="List the task workers and whether each is alive (admin)")
def list_workers(services: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    if not caller.is_admin:
        raise errors.Forbidden("Only administrators may list the workers.")
    found = services.workers.list()
    return {
        "workers": [worker_body(w) for w in found],
        "stale_seconds": services.workers.stale_seconds,
        "live_hosts": sorted({w.host for w in found if w.alive}),
    }
