"""Karbor's provider reads (spec §11.13): the one CSBS provider."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from csbs.api.deps import ReaderDep
from csbs.domain.providers import CSBS_PROVIDER, Provider, require_provider

router = APIRouter(prefix="/v1/{project_id}", tags=["providers"])


def _provider(p: Provider) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "extended_info_schema": {},
        "saving_info_schema": {},
        "restore_schema": {},
    }


@router.get("/providers", summary="List providers")
def list_providers(_principal: ReaderDep) -> dict[str, Any]:
    return {"providers": [_provider(CSBS_PROVIDER)]}


@router.get("/providers/{provider_id}", summary="Show a provider")
def show_provider(provider_id: str, _principal: ReaderDep) -> dict[str, Any]:
    return {"provider": _provider(require_provider(provider_id))}
