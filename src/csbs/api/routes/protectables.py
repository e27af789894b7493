"""Karbor's protectables (what a plan may hold): the project's servers, the one type CSBS
protects. `karbor plan-create` looks each resource up here before it creates the plan."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from csbs.api.deps import ReaderDep, ServicesDep
from csbs.api.params import StrictQuery
from csbs.domain import errors
from csbs.domain.inventory import SERVER_TYPE, Server, ServerNotFound

router = APIRouter(prefix="/v1/{project_id}/protectables", tags=["protectables"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
TypePath = Annotated[str, Path(min_length=1, max_length=64)]


def _require_type(protectable_type: str) -> None:
    if protectable_type != SERVER_TYPE:
        raise errors.InvalidInput(f"protectable type {protectable_type!r} is not {SERVER_TYPE}")


def _instance(server: Server) -> dict[str, Any]:
    return {
        "id": server.id,
        "type": SERVER_TYPE,
        "name": server.name,
        "extra_info": {"status": server.status.value},
        "dependent_resources": [],
    }


@router.get("", summary="List protectable types (Karbor)")
def list_types(_p: ReaderDep) -> dict[str, Any]:
    return {"protectable_type": [SERVER_TYPE]}


@router.get("/{protectable_type}", summary="Show a protectable type (Karbor)")
def show_type(protectable_type: TypePath, _p: ReaderDep) -> dict[str, Any]:
    _require_type(protectable_type)
    return {"protectable_type": {"name": SERVER_TYPE, "dependent_types": []}}


@router.get(
    "/{protectable_type}/instances",
    summary="List protectable instances: the project's servers (Karbor)",
    # No filter or paging of its own: whatever Karbor's clients add is refused, not ignored.
    dependencies=[StrictQuery],
)
def list_instances(
    project_id: str, protectable_type: TypePath, services: ServicesDep, _p: ReaderDep
) -> dict[str, Any]:
    _require_type(protectable_type)
    return {"instances": [_instance(s) for s in services.inventory.servers(project_id)]}


@router.get(
    "/{protectable_type}/instances/{instance_id}",
    summary="Show a protectable instance: a server (Karbor)",
)
def show_instance(
    project_id: str,
    protectable_type: TypePath,
    instance_id: IdPath,
    services: ServicesDep,
    _p: ReaderDep,
) -> dict[str, Any]:
    _require_type(protectable_type)
    try:
        server = services.inventory.get(project_id, instance_id)
    except ServerNotFound as e:
        # CSBS answers 400 for a server named in a request; an instance looked up is
        # Karbor's resource, and `karbor plan-create` reads only a 404 as "not found".
        raise errors.NotFound(e.message, code=e.code) from e
    return {"instance": _instance(server)}
