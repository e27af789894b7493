"""Backup policies: create, list, show, update, delete (P1-P5) and execute now (B1)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from csbs.api.deps import ActorDep, ReaderDep, ServicesDep, base_url, check_all_tenants
from csbs.api.schemas.backups import checkpoint_body
from csbs.api.schemas.common import next_link, timestamp
from csbs.api.schemas.policies import (
    CheckpointBody,
    PolicyCreateBody,
    PolicyUpdateBody,
    SchedulePreviewBody,
    create_spec,
    policy_body,
    run_body,
    update_spec,
)
from csbs.domain.paging import page_request
from csbs.domain.policies import PolicyFilter
from csbs.domain.providers import require_provider
from csbs.services.policies import DEFAULT_SORT, SORT_KEYS

router = APIRouter(prefix="/v1/{project_id}", tags=["policies"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/policies", summary="Create a backup policy (P1)")
def create_policy(
    project_id: str, body: PolicyCreateBody, services: ServicesDep, _p: ActorDep
) -> dict[str, Any]:
    require_provider(body.policy.provider_id)
    policy = services.policies.create(project_id, create_spec(body.policy))
    return {"policy": policy_body(policy)}


@router.get("/policies", summary="List backup policies (P2)")
def list_policies(
    project_id: str,
    request: Request,
    services: ServicesDep,
    principal: ReaderDep,
    limit: Annotated[int | None, Query()] = None,
    marker: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int | None, Query()] = None,
    sort: Annotated[str | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=255)] = None,
    all_tenants: Annotated[bool | None, Query()] = None,
) -> dict[str, Any]:
    every_project = check_all_tenants(principal, all_tenants)
    page = page_request(
        limit=limit,
        marker=marker,
        offset=offset,
        sort=sort,
        allowed_sort=SORT_KEYS,
        default_sort=DEFAULT_SORT,
    )
    result = services.policies.search(
        PolicyFilter(project_id=None if every_project else project_id, name=name), page
    )
    body: dict[str, Any] = {"policies": [policy_body(p) for p in result.items]}
    if result.has_more and result.items:
        body["policies_links"] = next_link(
            request, base_url(request), result.items[-1].id, page.limit
        )
    return body


@router.post(
    "/policies/schedule_preview",
    summary="The next runs of a schedule, before saving a policy with it (our extension)",
)
def preview_schedule(
    project_id: str, body: SchedulePreviewBody, services: ServicesDep, _p: ReaderDep
) -> dict[str, Any]:
    s = body.schedule
    runs = services.policies.preview(project_id, s.pattern, s.timezone, s.count, s.policy_id)
    return {"next_runs": [timestamp(r) for r in runs], "timezone": s.timezone or "UTC"}


@router.get("/policies/{policy_id}/runs", summary="A policy's last runs and skips (our extension)")
def list_policy_runs(
    project_id: str,
    policy_id: IdPath,
    services: ServicesDep,
    _p: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    return {"runs": [run_body(r) for r in services.policies.runs(project_id, policy_id, limit)]}


@router.get("/policies/{policy_id}", summary="Show a backup policy (P3)")
def show_policy(
    project_id: str, policy_id: IdPath, services: ServicesDep, _p: ReaderDep
) -> dict[str, Any]:
    return {"policy": policy_body(services.policies.get(project_id, policy_id))}


@router.put("/policies/{policy_id}", summary="Update a backup policy (P4)")
def update_policy(
    project_id: str,
    policy_id: IdPath,
    body: PolicyUpdateBody,
    services: ServicesDep,
    _p: ActorDep,
) -> dict[str, Any]:
    policy = services.policies.update(project_id, policy_id, update_spec(body.policy))
    return {"policy": policy_body(policy)}


@router.delete("/policies/{policy_id}", summary="Delete a backup policy (P5)")
def delete_policy(
    project_id: str, policy_id: IdPath, services: ServicesDep, _p: ActorDep
) -> dict[str, Any]:
    services.policies.delete(project_id, policy_id)
    return {}


@router.post("/providers/{provider_id}/checkpoints", summary="Execute a policy now (B1)")
def execute_policy(
    project_id: str,
    provider_id: IdPath,
    body: CheckpointBody,
    services: ServicesDep,
    _p: ActorDep,
) -> dict[str, Any]:
    require_provider(provider_id)
    c = body.checkpoint
    params = c.parameters
    checkpoint, _backups = services.policies.execute(
        project_id,
        c.plan_id,
        params.resources if params else None,
        auto_trigger=bool(params and params.auto_trigger),
        extra_info=c.extra_info or c.extra_info_,
    )
    return {"checkpoint": checkpoint_body(checkpoint)}
