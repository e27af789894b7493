"""Karbor's provider reads (spec §11.13): the one CSBS provider."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from csbs.api.deps import ReaderDep
from csbs.api.params import StrictQuery, karbor_page
from csbs.domain import errors
from csbs.domain.providers import CSBS_PROVIDER, Provider, require_provider

router = APIRouter(prefix="/v1/{project_id}", tags=["providers"])
SORT_KEYS = frozenset({"id", "name", "description"})


def _provider(p: Provider) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "extended_info_schema": {},
        "saving_info_schema": {},
        "restore_schema": {},
    }


Str = Annotated[str | None, Query(max_length=255)]


@router.get("/providers", summary="List providers", dependencies=[StrictQuery])
def list_providers(
    _principal: ReaderDep,
    name: Str = None,
    description: Str = None,
    limit: Annotated[int | None, Query()] = None,
    marker: Str = None,
    offset: Annotated[int | None, Query()] = None,
    sort: Str = None,
    sort_key: Str = None,
    sort_dir: Str = None,
) -> dict[str, Any]:
    # One provider: the filters are checked against it and the sort only validated, so a
    # request Karbor's clients can send is answered as Karbor would.
    page = karbor_page(
        limit=limit,
        marker=marker,
        offset=offset,
        sort=sort,
        sort_key=sort_key,
        sort_dir=sort_dir,
        allowed_sort=SORT_KEYS,
        default_sort="name:asc",
    )
    providers = [
        p
        for p in (CSBS_PROVIDER,)
        if (name is None or p.name == name)
        and (description is None or p.description == description)
    ]
    if page.marker is not None:
        if page.marker != CSBS_PROVIDER.id:
            raise errors.InvalidInput(f"marker {page.marker} is not a provider of this list")
        providers = []
    return {"providers": [_provider(p) for p in providers[page.offset :][: page.limit]]}


@router.get("/providers/{provider_id}", summary="Show a provider")
def show_provider(provider_id: str, _principal: ReaderDep) -> dict[str, Any]:
    return {"provider": _provider(require_provider(provider_id))}
