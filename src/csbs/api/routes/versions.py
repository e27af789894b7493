"""Version discovery: `GET /` (300, Karbor style; a browser is sent to the console) and
`GET /v1`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from csbs.api.console import console_redirect, wants_html
from csbs.api.deps import ServicesDep, base_url

router = APIRouter(tags=["versions"])

V1_UPDATED = "2026-11-01T00:00:00Z"


def _v1(base: str) -> dict[str, Any]:
    return {
        "id": "v1.0",
        "status": "CURRENT",
        "updated": V1_UPDATED,
        "links": [{"rel": "self", "href": f"{base}/v1/"}],
    }


@router.get("/", status_code=300, summary="List API versions")
def list_versions(request: Request, services: ServicesDep) -> Response:
    # A browser asks for HTML and gets the console; API clients keep the versions document.
    if wants_html(request.headers.get("accept")):
        return console_redirect()
    return JSONResponse({"versions": [_v1(base_url(request))]}, status_code=300)


@router.get("/v1", summary="Show API version 1")
@router.get("/v1/", include_in_schema=False)
def show_v1(request: Request, services: ServicesDep) -> dict[str, Any]:
    return {"version": _v1(base_url(request))}
