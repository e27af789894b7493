"""Backups: create (R1), capability checks (R2/R3), query (B3-B5), backup records (K3)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from csbs.api.deps import (
    ActorDep,
    EdgeDep,
    ReaderDep,
    ServicesDep,
    base_url,
    check_all_tenants,
)
from csbs.api.params import (
    StrictQuery,
    karbor_page,
    parse_date_bound,
    parse_item_ids,
    parse_time,
    project_scope,
)
from csbs.api.schemas.backups import (
    ProtectBody,
    ResourcesActionBody,
    backup_body,
    checkpoint_body,
)
from csbs.api.schemas.common import next_link
from csbs.domain import errors
from csbs.domain.backups import (
    CHECKPOINT_STATUSES,
    BackupFilter,
    BackupStatus,
    CheckpointFilter,
)
from csbs.domain.paging import page_request
from csbs.domain.providers import require_provider
from csbs.services.backups import (
    CHECKPOINT_SORT_KEYS,
    DEFAULT_SORT,
    SORT_KEYS,
    ProtectRequest,
)
from csbs.services.container import Services

router = APIRouter(prefix="/v1/{project_id}", tags=["backups"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
Str64 = Annotated[str | None, Query(max_length=64)]
Str255 = Annotated[str | None, Query(max_length=255)]


@router.post(
    "/providers/{provider_id}/resources/{resource_id}/action", summary="Back up a server (R1)"
)
def protect(
    project_id: str,
    provider_id: IdPath,
    resource_id: IdPath,
    body: ProtectBody,
    services: ServicesDep,
    _p: ActorDep,
) -> dict[str, Any]:
    require_provider(provider_id)
    p = body.protect
    cp, _backup = services.backups.protect(
        project_id,
        ProtectRequest(
            server_id=resource_id,
            name=p.backup_name,
            description=p.description or "",
            incremental=p.incremental,
            resource_type=p.resource_type,
            tags=[(t.key, t.value) for t in p.tags or []],
            extra_info=p.extra_info,
        ),
    )
    return {"checkpoint": checkpoint_body(cp)}


@router.post(
    "/providers/{provider_id}/resources/action",
    summary="Check backup or restore capability (R2/R3)",
)
def resources_action(
    project_id: str,
    provider_id: IdPath,
    body: ResourcesActionBody,
    services: ServicesDep,
    _p: ReaderDep,
) -> dict[str, Any]:
    require_provider(provider_id)
    if (body.check_protectable is None) == (body.check_restorable is None):
        raise errors.InvalidInput(
            "the body must hold exactly one of check_protectable, check_restorable"
        )
    if body.check_protectable is not None:
        caps = services.backups.check_protectable(
            project_id, [(i.resource_id, i.resource_type) for i in body.check_protectable]
        )
        key = "protectable"
    else:
        assert body.check_restorable is not None
        caps = services.restores.check_restorable(
            project_id,
            [
                (
                    i.checkpoint_item_id,
                    i.target.resource_id,
                    i.target.resource_type,
                    [(v.backup_id, v.volume_id) for v in i.target.volumes],
                )
                for i in body.check_restorable
            ],
        )
        key = "restorable"
    out = []
    for c in caps:
        item: dict[str, Any] = {
            "resource_id": c.resource_id,
            "resource_type": c.resource_type,
            "result": c.result,
        }
        if not c.result or key == "restorable":
            item["error_code"] = c.error_code
            item["error_msg"] = c.error_msg
        out.append(item)
    return {key: out}


async def backup_filter(
    project_id: str,
    edge: EdgeDep,
    principal: ReaderDep,
    status: Str64 = None,
    name: Str255 = None,
    az: Str255 = None,
    resource_id: Str64 = None,
    resource_name: Str255 = None,
    start_time: Str64 = None,
    end_time: Str64 = None,
    image_type: Str64 = None,
    policy_id: Str64 = None,
    checkpoint_id: Str64 = None,
    resource_type: Str64 = None,
    ip: Str64 = None,
    dec: Str64 = None,
    all_tenants: Annotated[bool | None, Query()] = None,
) -> BackupFilter:
    """The filters B4 and B5 share (spec §4.7); `dec` is accepted and has no meaning here."""
    every_project = check_all_tenants(principal, all_tenants)
    if status is not None and status not in {s.value for s in BackupStatus}:
        raise errors.InvalidInput(
            f"status must be one of: {', '.join(s.value for s in BackupStatus)}"
        )
    # Every backup here is an image of type "backup" in the one region; there are no IPs.
    impossible = (
        (az is not None and az != edge.options.region)
        or (image_type is not None and image_type != "backup")
        or bool(ip)
    )
    return BackupFilter(
        project_id=None if every_project else project_id,
        status=status,
        name=name,
        resource_id=resource_id,
        resource_name=resource_name,
        resource_type=resource_type,
        checkpoint_id=checkpoint_id,
        plan_id=policy_id,
        created_from=parse_time(start_time, "start_time"),
        created_to=parse_time(end_time, "end_time"),
        impossible=impossible,
    )


FilterDep = Annotated[BackupFilter, Depends(backup_filter)]


@router.get("/checkpoint_items/count", summary="Count backups (B5)")
def count_backups(services: ServicesDep, f: FilterDep) -> dict[str, Any]:
    # Paging parameters that clients also send (limit, marker, ...) are ignored.
    return {"count": services.backups.count(f)}


#: csbs's additions to a backup's `extend_info`, beside the fields of the CSBS spec.
_EXTEND_INFO = (
    "Beside the fields of the CSBS spec, `extend_info` carries csbs's byte counts of the "
    "backup: `logical_bytes` (the bytes of its disk images), `new_bytes` (what it found not "
    "stored yet), `reused_bytes` (what was stored already), `stored_bytes` (what its "
    "new data takes in the repository) and `bytes_read` (what it read of the disks); each "
    "of `volume_backups` says in `skipped_unchanged` whether its image file was not read "
    "because its size, times, inode and device were those of the previous backup's."
)


@router.get("/checkpoint_items", summary="List backups (B4)", description=_EXTEND_INFO)
def list_backups(
    request: Request,
    services: ServicesDep,
    edge: EdgeDep,
    f: FilterDep,
    limit: Annotated[int | None, Query()] = None,
    marker: Str64 = None,
    offset: Annotated[int | None, Query()] = None,
    sort: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    page = page_request(
        limit=limit,
        marker=marker,
        offset=offset,
        sort=sort,
        allowed_sort=SORT_KEYS,
        default_sort=DEFAULT_SORT,
    )
    result = services.backups.search(f, page)
    body: dict[str, Any] = {
        "checkpoint_items": [backup_body(b, edge.options.region) for b in result.items]
    }
    if result.has_more and result.items:
        body["checkpoint_items_links"] = next_link(
            request, base_url(request), result.items[-1].id, page.limit
        )
    return body


@router.get(
    "/checkpoint_items/{checkpoint_item_id}", summary="Show a backup (B3)", description=_EXTEND_INFO
)
def show_backup(
    project_id: str,
    checkpoint_item_id: IdPath,
    services: ServicesDep,
    edge: EdgeDep,
    _p: ReaderDep,
) -> dict[str, Any]:
    b = services.backups.get(project_id, checkpoint_item_id)
    return {"checkpoint_item": backup_body(b, edge.options.region)}


@router.delete(
    "/providers/{provider_id}/checkpoints/{checkpoint_id}",
    summary="Delete backups of a record (B2)",
)
def delete_backups(
    project_id: str,
    provider_id: IdPath,
    checkpoint_id: IdPath,
    request: Request,
    services: ServicesDep,
    _p: ActorDep,
    checkpoint_items: Annotated[
        list[str] | None,
        Query(description="Backup ids: one, comma-separated, or the parameter repeated."),
    ] = None,
) -> JSONResponse:
    return accept_deletion(
        services,
        project_id,
        provider_id,
        checkpoint_id,
        request.query_params.getlist("checkpoint_items"),
    )


def accept_deletion(
    services: Services,
    project_id: str,
    provider_id: str,
    checkpoint_id: str,
    checkpoint_items: list[str],
) -> JSONResponse:
    """The body of `delete_backups` once the caller may act in the project (it blocks on
    the database); `csbs.api.fast_delete` calls it too."""
    require_provider(provider_id)
    ids = parse_item_ids(checkpoint_items)
    task_ids = services.deletions.delete(project_id, checkpoint_id, ids)
    return JSONResponse({}, headers={"X-Operation-Log-Id": ",".join(task_ids)})


@router.get(
    "/providers/{provider_id}/checkpoints",
    summary="List backup records (Karbor)",
    dependencies=[StrictQuery],
)
def list_checkpoints(
    project_id: str,
    provider_id: IdPath,
    request: Request,
    services: ServicesDep,
    principal: ReaderDep,
    plan_id: Str64 = None,
    start_date: Str64 = None,
    end_date: Str64 = None,
    status: Str64 = None,
    tenant: Annotated[str | None, Query(alias="project_id", max_length=64)] = None,
    all_tenants: Annotated[bool | None, Query()] = None,
    limit: Annotated[int | None, Query()] = None,
    marker: Str64 = None,
    offset: Annotated[int | None, Query()] = None,
    sort: Str255 = None,
    sort_key: Str64 = None,
    sort_dir: Str64 = None,
) -> dict[str, Any]:
    require_provider(provider_id)
    if status is not None and status not in CHECKPOINT_STATUSES:
        raise errors.InvalidInput(f"status must be one of: {', '.join(CHECKPOINT_STATUSES)}")
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
        allowed_sort=CHECKPOINT_SORT_KEYS,
        default_sort=DEFAULT_SORT,
    )
    f = CheckpointFilter(
        project_id=project,
        plan_id=plan_id,
        status=status,
        created_from=parse_date_bound(start_date, "start_date", end=False),
        created_to=parse_date_bound(end_date, "end_date", end=True),
    )
    if impossible:
        return {"checkpoints": []}
    result = services.backups.checkpoints(f, page)
    body: dict[str, Any] = {"checkpoints": [checkpoint_body(c) for c in result.items]}
    if result.has_more and result.items:
        body["checkpoints_links"] = next_link(
            request, base_url(request), result.items[-1].id, page.limit
        )
    return body


@router.get(
    "/providers/{provider_id}/checkpoints/{checkpoint_id}", summary="Show a backup record (Karbor)"
)
def show_checkpoint(
    project_id: str,
    provider_id: IdPath,
    checkpoint_id: IdPath,
    services: ServicesDep,
    _p: ReaderDep,
) -> dict[str, Any]:
    require_provider(provider_id)
    return {"checkpoint": checkpoint_body(services.backups.checkpoint(project_id, checkpoint_id))}
