"""Operation logs (spec §11.5): the task records of a project."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from csbs.api.deps import ReaderDep, ServicesDep, base_url, check_all_tenants
from csbs.api.params import parse_time
from csbs.api.schemas.common import next_link, timestamp
from csbs.domain import errors
from csbs.domain.operations import TaskFilter, TaskStatus
from csbs.domain.paging import page_request
from csbs.services.operation_logs import DEFAULT_SORT, SORT_KEYS, OperationLog

router = APIRouter(prefix="/v1/{project_id}", tags=["operation_logs"])

OPERATION_TYPES = ("backup", "restore", "delete")


def operation_log_body(log: OperationLog) -> dict[str, Any]:
    t = log.task
    return {
        "id": t.id,
        "project_id": t.project_id,
        "operation_type": t.operation_type,
        "status": t.status.value,
        "provider_id": t.refs.provider_id,
        "checkpoint_id": t.refs.checkpoint_id,
        "checkpoint_item_id": t.refs.checkpoint_item_id,
        "plan_id": t.refs.plan_id,
        "restore_id": t.refs.restore_id,
        "resource_id": t.refs.resource_id,
        "resource_name": t.refs.resource_name,
        "created_at": timestamp(t.created_at),
        "started_at": timestamp(t.started_at),
        "ended_at": timestamp(t.ended_at),
        "error_info": dict(t.error_info) if t.error_info else None,
        "extra_info": log.extra_info,
    }


@router.get("/operation_logs", summary="List operation logs (tasks)")
def list_operation_logs(
    project_id: str,
    request: Request,
    services: ServicesDep,
    principal: ReaderDep,
    operation_type: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    checkpoint_id: Annotated[str | None, Query(max_length=64)] = None,
    checkpoint_item_id: Annotated[str | None, Query(max_length=64)] = None,
    plan_id: Annotated[str | None, Query(max_length=64)] = None,
    resource_id: Annotated[str | None, Query(max_length=64)] = None,
    start_time: Annotated[str | None, Query(max_length=64)] = None,
    end_time: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int | None, Query()] = None,
    marker: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int | None, Query()] = None,
    sort: Annotated[str | None, Query()] = None,
    all_tenants: Annotated[bool | None, Query()] = None,
) -> dict[str, Any]:
    every_project = check_all_tenants(principal, all_tenants)
    if operation_type is not None and operation_type not in OPERATION_TYPES:
        raise errors.InvalidInput(f"operation_type must be one of: {', '.join(OPERATION_TYPES)}")
    if status is not None and status not in {s.value for s in TaskStatus}:
        raise errors.InvalidInput(
            f"status must be one of: {', '.join(s.value for s in TaskStatus)}"
        )
    page = page_request(
        limit=limit,
        marker=marker,
        offset=offset,
        sort=sort,
        allowed_sort=SORT_KEYS,
        default_sort=DEFAULT_SORT,
    )
    task_filter = TaskFilter(
        project_id=None if every_project else project_id,
        operation_type=operation_type,
        status=TaskStatus(status) if status else None,
        checkpoint_id=checkpoint_id,
        checkpoint_item_id=checkpoint_item_id,
        plan_id=plan_id,
        resource_id=resource_id,
        created_from=parse_time(start_time, "start_time"),
        created_to=parse_time(end_time, "end_time"),
    )
    result = services.operation_logs.search(task_filter, page)
    body: dict[str, Any] = {"operation_logs": [operation_log_body(x) for x in result.items]}
    if result.has_more and result.items:
        body["operation_logs_links"] = next_link(
            request, base_url(request), result.items[-1].task.id, page.limit
        )
    return body


@router.get("/operation_logs/{operation_log_id}", summary="Show one operation log (task)")
def show_operation_log(
    project_id: str,
    operation_log_id: Annotated[str, Path(max_length=64)],
    services: ServicesDep,
    principal: ReaderDep,
    all_tenants: Annotated[
        bool | None,
        Query(description="Admins: the task of any project (its project_id tells which)."),
    ] = None,
) -> dict[str, Any]:
    every_project = check_all_tenants(principal, all_tenants)
    log = services.operation_logs.get(None if every_project else project_id, operation_log_id)
    return {"operation_log": operation_log_body(log)}
