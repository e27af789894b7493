"""The server inventory (our extension of the CSBS API): admins register, projects read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from csbs.api.deps import ReaderDep, ServicesDep, admin_of, check_all_tenants
from csbs.api.schemas.servers import ServerCreateBody, ServerStatusBody, server_body
from csbs.domain.identity import Principal
from csbs.services.inventory import DiskSpec

router = APIRouter(prefix="/v1/{project_id}", tags=["servers"])
ServerIdPath = Annotated[str, Path(min_length=1, max_length=64)]


AdminDep = Annotated[Principal, Depends(admin_of("the server inventory"))]


@router.post("/servers", summary="Register a server and its disks (admin)")
def create_server(
    project_id: str, body: ServerCreateBody, services: ServicesDep, _p: AdminDep
) -> dict[str, Any]:
    spec = body.server
    server = services.inventory.add_server(
        project_id,
        spec.name,
        [DiskSpec(path=d.path, name=d.name) for d in spec.disks],
        host=spec.host,
        status=spec.status,
        allow_hardlinks=spec.allow_hardlinks,
    )
    return {"server": server_body(server)}


@router.get("/servers", summary="List the project's servers")
def list_servers(project_id: str, services: ServicesDep, _p: ReaderDep) -> dict[str, Any]:
    return {"servers": [server_body(s) for s in services.inventory.servers(project_id)]}


@router.get(
    "/servers/unassigned",
    summary="List the discovered servers that no project has yet (admin)",
)
def list_unassigned(project_id: str, services: ServicesDep, _p: AdminDep) -> dict[str, Any]:
    servers = services.inventory.servers(None, unassigned=True)
    return {"servers": [server_body(s) for s in servers]}


@router.post(
    "/servers/{server_id}/assign",
    summary="Give a discovered server that no project has to this project (admin)",
)
def assign_server(
    project_id: str, server_id: ServerIdPath, services: ServicesDep, _p: AdminDep
) -> dict[str, Any]:
    return {"server": server_body(services.inventory.assign(server_id, project_id))}


@router.get("/servers/{server_id}", summary="Show a server")
def show_server(
    project_id: str,
    server_id: ServerIdPath,
    services: ServicesDep,
    principal: ReaderDep,
    all_tenants: Annotated[
        bool | None,
        Query(description="Admins: the server of any project (its project_id tells which)."),
    ] = None,
) -> dict[str, Any]:
    every_project = check_all_tenants(principal, all_tenants)
    server = services.inventory.get(None if every_project else project_id, server_id)
    return {"server": server_body(server)}


@router.put("/servers/{server_id}", summary="Set a server's status (admin)")
def update_server(
    project_id: str,
    server_id: ServerIdPath,
    body: ServerStatusBody,
    services: ServicesDep,
    _p: AdminDep,
) -> dict[str, Any]:
    server = services.inventory.set_status(project_id, server_id, body.server.status)
    return {"server": server_body(server)}


@router.delete("/servers/{server_id}", summary="Remove a server from the inventory (admin)")
def delete_server(
    project_id: str, server_id: ServerIdPath, services: ServicesDep, _p: AdminDep
) -> dict[str, Any]:
    services.inventory.remove(project_id, server_id)
    return {}
