"""Karbor's protection plans (spec §11.17): the same policies as P1-P5, in Karbor's shapes.

One store, two views: a plan is a policy; its status is whether the policy's schedule
fires (docs/decisions/0017-karbor-plans-are-policies.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from csbs.api.deps import ActorDep, ReaderDep, ServicesDep, base_url, check_all_tenants
from csbs.api.params import StrictQuery, karbor_page, project_scope
from csbs.api.schemas.common import next_link
from csbs.api.schemas.plans import (
    DEFAULT_DEFINITION,
    DEFAULT_PATTERN,
    PLAN_STATUSES,
    PlanCreateBody,
    PlanUpdateBody,
    plan_body,
)
from csbs.domain import errors
from csbs.domain.policies import PolicyFilter
from csbs.domain.providers import require_provider
from csbs.services.policies import (
    DEFAULT_SORT,
    SORT_KEYS,
    OperationSpec,
    PolicySpec,
    ResourceSpec,
)

router = APIRouter(prefix="/v1/{project_id}", tags=["plans"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
Str = Annotated[str | None, Query(max_length=255)]


@router.get("/plans", summary="List protection plans (Karbor)", dependencies=[StrictQuery])
def list_plans(
    project_id: str,
    request: Request,
    services: ServicesDep,
    principal: ReaderDep,
    name: Str = None,
    description: Str = None,
    status: Str = None,
    tenant: Annotated[str | None, Query(alias="project_id", max_length=64)] = None,
    all_tenants: Annotated[bool | None, Query()] = None,
    limit: Annotated[int | None, Query()] = None,
    marker: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int | None, Query()] = None,
    sort: Str = None,
    sort_key: Str = None,
    sort_dir: Str = None,
) -> dict[str, Any]:
    if status is not None and status not in PLAN_STATUSES:
        raise errors.InvalidInput(f"status must be one of: {', '.join(PLAN_STATUSES)}")
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
        return {"plans": []}
    f = PolicyFilter(
        project_id=project,
        name=name,
        description=description,
        enabled=None if status is None else status == "started",
    )
    result = services.policies.search(f, page)
    body: dict[str, Any] = {"plans": [plan_body(p) for p in result.items]}
    if result.has_more and result.items:
        body["plans_links"] = next_link(request, base_url(request), result.items[-1].id, page.limit)
    return body


@router.get("/plans/{plan_id}", summary="Show a protection plan (Karbor)")
def show_plan(
    project_id: str, plan_id: IdPath, services: ServicesDep, _p: ReaderDep
) -> dict[str, Any]:
    return {"plan": plan_body(services.policies.get(project_id, plan_id))}


@router.post("/plans", summary="Create a protection plan (Karbor)")
def create_plan(
    project_id: str, body: PlanCreateBody, services: ServicesDep, _p: ActorDep
) -> dict[str, Any]:
    p = body.plan
    require_provider(p.provider_id)
    policy = services.policies.create(
        project_id,
        PolicySpec(
            name=p.name,
            description=p.description,
            parameters=p.parameters,
            resources=[ResourceSpec(r.id, r.type, r.name, r.extra_info) for r in p.resources],
            # Karbor plans start suspended and have no schedule of their own.
            operation=OperationSpec(
                enabled=False,
                operation_type="backup",
                definition=DEFAULT_DEFINITION,
                pattern=DEFAULT_PATTERN,
            ),
        ),
    )
    return {"plan": plan_body(policy)}


@router.put("/plans/{plan_id}", summary="Update a protection plan (Karbor)")
def update_plan(
    project_id: str,
    plan_id: IdPath,
    body: PlanUpdateBody,
    services: ServicesDep,
    _p: ActorDep,
) -> dict[str, Any]:
    p = body.plan
    operation = None
    if p.status is not None:
        current = services.policies.get(project_id, plan_id)
        operation = OperationSpec(id=current.operation.id, enabled=p.status == "started")
    policy = services.policies.update(
        project_id,
        plan_id,
        PolicySpec(
            name=p.name,
            description=p.description,
            resources=[ResourceSpec(r.id, r.type, r.name, r.extra_info) for r in p.resources]
            if p.resources is not None
            else None,
            operation=operation,
        ),
    )
    return {"plan": plan_body(policy)}


@router.delete("/plans/{plan_id}", status_code=202, summary="Delete a protection plan (Karbor)")
def delete_plan(
    project_id: str, plan_id: IdPath, services: ServicesDep, _p: ActorDep
) -> dict[str, Any]:
    services.policies.delete(project_id, plan_id)
    return {}
