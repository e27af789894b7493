"""Restores: create (S1), list and show (Karbor K2)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from csbs.api.deps import ActorDep, ReaderDep, ServicesDep, base_url, check_all_tenants
from csbs.api.params import StrictQuery, karbor_page, project_scope
from csbs.api.schemas.common import next_link, timestamp
from csbs.domain import errors
from csbs.domain.providers import require_provider
from csbs.domain.restores import Restore, RestoreFilter, RestoreStatus, VolumeMapping
from csbs.services.restores import DEFAULT_SORT, SORT_KEYS, RestoreRequest

router = APIRouter(prefix="/v1/{project_id}", tags=["restores"])


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Volume(_Lenient):
    backup_id: str = Field(min_length=1, max_length=64)
    volume_id: str = Field(min_length=1, max_length=64)


class Targets(_Lenient):
    server_id: str = Field(min_length=1, max_length=64)
    volumes: list[Volume] = Field(min_length=1, max_length=24)


class RestoreParameters(_Lenient):
    checkpoint_item_id: str = Field(min_length=1, max_length=64)
    power_on: bool
    targets: Targets


class RestoreCreate(_Lenient):
    provider_id: str = Field(min_length=1, max_length=64)
    checkpoint_id: str = Field(min_length=1, max_length=64)
    restore_target: str | None = Field(default=None, max_length=255)
    parameters: RestoreParameters


class RestoreBody(_Lenient):
    restore: RestoreCreate


def restore_body(r: Restore) -> dict[str, Any]:
    resource = f"OS::Nova::Server#{r.server_id}"
    return {
        "id": r.id,
        "project_id": r.project_id,
        "provider_id": r.provider_id,
        "checkpoint_id": r.checkpoint_id,
        "restore_target": r.restore_target,
        "parameters": {
            "checkpoint_item_id": r.backup_id,
            "power_on": r.power_on,
            "targets": {
                "server_id": r.server_id,
                "volumes": [
                    {"backup_id": m.backup_id, "volume_id": m.volume_id} for m in r.mappings
                ],
            },
        },
        "status": r.status.value,
        "resources_status": {resource: r.status.value},
        "resources_reason": {resource: r.reason} if r.reason else {},
        "created_at": timestamp(r.created_at),
        "ended_at": timestamp(r.ended_at),
    }


@router.post("/restores", summary="Restore a server from a backup (S1)")
def create_restore(
    project_id: str, body: RestoreBody, services: ServicesDep, _p: ActorDep
) -> dict[str, Any]:
    spec = body.restore
    require_provider(spec.provider_id)
    restore = services.restores.restore(
        project_id,
        RestoreRequest(
            checkpoint_id=spec.checkpoint_id,
            backup_id=spec.parameters.checkpoint_item_id,
            server_id=spec.parameters.targets.server_id,
            mappings=[
                VolumeMapping(v.backup_id, v.volume_id) for v in spec.parameters.targets.volumes
            ],
            power_on=spec.parameters.power_on,
            restore_target=spec.restore_target,
        ),
    )
    return {"restore": restore_body(restore)}


@router.get("/restores", summary="List restores (Karbor)", dependencies=[StrictQuery])
def list_restores(
    project_id: str,
    request: Request,
    services: ServicesDep,
    principal: ReaderDep,
    status: Annotated[str | None, Query(max_length=64)] = None,
    tenant: Annotated[str | None, Query(alias="project_id", max_length=64)] = None,
    all_tenants: Annotated[bool | None, Query()] = None,
    limit: Annotated[int | None, Query()] = None,
    marker: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int | None, Query()] = None,
    sort: Annotated[str | None, Query(max_length=255)] = None,
    sort_key: Annotated[str | None, Query(max_length=64)] = None,
    sort_dir: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    statuses = {s.value for s in RestoreStatus}
    if status is not None and status not in statuses:
        raise errors.InvalidInput(f"status must be one of: {', '.join(sorted(statuses))}")
    project, impossible = project_scope(
        project_id, check_all_tenants(principal, all_tenants), tenant
    )
    page = karbor_page(
        limit=limit,
        marker=marker,
        offset=offset,
        sort=sort,
        sort_key=sort_key,
        sort_dir=sort_dir,
        allowed_sort=SORT_KEYS,
        default_sort=DEFAULT_SORT,
    )
    if impossible:
        return {"restores": []}
    f = RestoreFilter(project_id=project, status=RestoreStatus(status) if status else None)
    result = services.restores.restores(f, page)
    body: dict[str, Any] = {"restores": [restore_body(r) for r in result.items]}
    if result.has_more and result.items:
        body["restores_links"] = next_link(
            request, base_url(request), result.items[-1].id, page.limit
        )
    return body


@router.get("/restores/{restore_id}", summary="Show a restore (Karbor)")
def show_restore(
    project_id: str,
    restore_id: Annotated[str, Path(min_length=1, max_length=64)],
    services: ServicesDep,
    _p: ReaderDep,
) -> dict[str, Any]:
    return {"restore": restore_body(services.restores.get(project_id, restore_id))}
