"""Operation logs (spec §11.5): the task records of a project."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from csbs.api.deps import ReaderDep, ServicesDep, base_url, check_all_tenants
from csbs.api.params import StrictQuery, karbor_page, parse_time, project_scope
from csbs.api.schemas.common import next_link, timestamp
from csbs.domain import errors
from csbs.domain.operations import (
    KARBOR_STATUSES,
    KARBOR_TYPES,
    OperationType,
    TaskFilter,
    TaskStatus,
)
from csbs.services.operation_logs import DEFAULT_SORT, SORT_KEYS, OperationLog

router = APIRouter(prefix="/v1/{project_id}", tags=["operation_logs"])


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


@router.get("/operation_logs", summary="List operation logs (tasks)", dependencies=[StrictQuery])
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
    tenant: Annotated[str | None, Query(alias="project_id", max_length=64)] = None,
    limit: Annotated[int | None, Query()] = None,
    marker: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int | None, Query()] = None,
    sort: Annotated[str | None, Query(max_length=255)] = None,
    sort_key: Annotated[str | None, Query(max_length=64)] = None,
    sort_dir: Annotated[str | None, Query(max_length=64)] = None,
    all_tenants: Annotated[bool | None, Query()] = None,
) -> dict[str, Any]:
    project, impossible = project_scope(
        project_id, check_all_tenants(principal, all_tenants), tenant
    )
    op_type = _operation_type(operation_type)
    task_status, implied_type = _status(status)
    if implied_type is not None:
        # Karbor's "available" is a finished protect: with another type asked, nothing.
        impossible = impossible or (op_type is not None and op_type != implied_type)
        op_type = implied_type
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
    task_filter = TaskFilter(
        project_id=project,
        operation_type=op_type.value if op_type else None,
        status=task_status,
        checkpoint_id=checkpoint_id,
        checkpoint_item_id=checkpoint_item_id,
        plan_id=plan_id,
        resource_id=resource_id,
        created_from=parse_time(start_time, "start_time"),
        created_to=parse_time(end_time, "end_time"),
    )
    if impossible:
        return {"operation_logs": []}
    result = services.operation_logs.search(task_filter, page)
    body: dict[str, Any] = {"operation_logs": [operation_log_body(x) for x in result.items]}
    if result.has_more and result.items:
        body["operation_logs_links"] = next_link(
            request, base_url(request), result.items[-1].task.id, page.limit
        )
    return body


def _operation_type(name: str | None) -> OperationType | None:
    """Ours, or Karbor's name of one of ours (`protect`)."""
    if name is None:
        return None
    if name in KARBOR_TYPES:
        return KARBOR_TYPES[name]
    if name not in {t.value for t in OperationType}:
        names = [*(t.value for t in OperationType), *KARBOR_TYPES]
        raise errors.InvalidInput(f"operation_type must be one of: {', '.join(names)}")
    return OperationType(name)


def _status(name: str | None) -> tuple[TaskStatus | None, OperationType | None]:
    """Ours, or Karbor's name of one of ours with the type it implies."""
    if name is None:
        return None, None
    if name in KARBOR_STATUSES:
        return KARBOR_STATUSES[name]
    if name not in {s.value for s in TaskStatus}:
        names = [*(s.value for s in TaskStatus), *KARBOR_STATUSES]
        raise errors.InvalidInput(f"status must be one of: {', '.join(names)}")
    return TaskStatus(name), None


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
