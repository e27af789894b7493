"""Quotas: Q1 for every caller of the project; changing them is for admins (our extension)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from csbs.api.deps import ReaderDep, ServicesDep, admin_of
from csbs.api.schemas.quotas import QuotaUpdateBody, quotas_body
from csbs.domain.identity import Principal

router = APIRouter(prefix="/v1/{project_id}", tags=["quotas"])


@router.get(
    "/quotas",
    summary="Query quotas (Q1)",
    description=(
        "Beside the fields of the CSBS spec, the `backup_capacity` entry carries csbs's "
        "`stored_bytes` (what the project's backups hold), `pending_release_bytes` (what "
        "deleted backups left, released by the periodic repository maintenance) and "
        "`release_by` (when that will have been released at the latest; null when nothing "
        "is pending)."
    ),
)
def show_quotas(project_id: str, services: ServicesDep, _p: ReaderDep) -> dict[str, Any]:
    return quotas_body(services.quotas.usage(project_id))


@router.put("/admin/quotas", summary="Set the project's quotas (admin)")
def set_quotas(
    project_id: str,
    body: QuotaUpdateBody,
    services: ServicesDep,
    _p: Annotated[Principal, Depends(admin_of("quotas"))],
) -> dict[str, Any]:
    usage = services.quotas.set(
        project_id, backups=body.quotas.backups, capacity_gb=body.quotas.backup_capacity
    )
    return quotas_body(usage)
