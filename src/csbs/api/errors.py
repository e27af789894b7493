"""The only table from errors to HTTP status and wire body (spec §11.10).

Body shape: the OpenStack fault object first, then CSBS's two keys::

    {"itemNotFound": {"code": 404, "message": "..."}, "error_code": "CSBS.3001", "error_msg": "..."}

and under /v3 Keystone's (spec §11.15)::

    {"error": {"code": 401, "title": "Unauthorized", "message": "..."}, "error_code": ..., ...}
"""

from __future__ import annotations

import http
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from csbs.domain import errors

log = logging.getLogger("csbs.api")

FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    500: "computeFault",
    503: "serviceUnavailable",
}

#: Error kind -> HTTP status. Looked up along the class's MRO, most specific first.
STATUS_BY_KIND: dict[type[errors.CsbsError], int] = {
    errors.InvalidInput: 400,
    errors.InvalidState: 400,
    errors.QuotaExceeded: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.InternalError: 500,
    errors.ServiceUnavailable: 503,
}


def status_for(exc: errors.CsbsError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_KIND:
            return STATUS_BY_KIND[cls]
    return 500


def is_identity_path(path: str) -> bool:
    """Whether `path` is Keystone's, whose errors take Keystone's shape (spec §11.15)."""
    return path == "/v3" or path.startswith("/v3/")


def error_body(status: int, code: str, message: str, path: str = "") -> dict[str, Any]:
    """The error body for a call to `path`: Keystone's under /v3, where keystoneauth reads
    `error.message` and shows only "Unrecognized schema" otherwise; the OpenStack fault
    object elsewhere (spec §11.10). CSBS's two keys follow either."""
    if is_identity_path(path):
        return {
            "error": {"code": status, "title": _title(status), "message": message},
            "error_code": code,
            "error_msg": message,
        }
    return {
        FAULT_NAMES.get(status, "computeFault" if status >= 500 else "badRequest"): {
            "code": status,
            "message": message,
        },
        "error_code": code,
        "error_msg": message,
    }


def _title(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    path: str = "",
) -> JSONResponse:
    return JSONResponse(
        error_body(status, code, message, path), status_code=status, headers=headers
    )


def response_for(exc: errors.CsbsError, path: str = "") -> JSONResponse:
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Keystone uri="/v3"'
    return error_response(status, exc.code, exc.message, headers, path)


def internal_error_response(request_id: str, path: str = "") -> JSONResponse:
    return error_response(
        500,
        "CSBS.9999",
        f"Internal error; quote request id {request_id} to the operator.",
        path=path,
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_message(exc: RequestValidationError) -> str:
    problems = exc.errors()
    if not problems:
        return "Invalid request."
    first = problems[0]
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON."
    where = first.get("loc", ())
    msg = str(first.get("msg", "invalid value"))
    if where and where[0] == "body" and len(where) == 1 and first.get("type") == "missing":
        return "The request body is missing."
    return f"Invalid value for '{_field_name(tuple(where))}': {msg}."


def install(app: FastAPI) -> None:
    """Register the error handlers on `app`. Called once by the app factory."""

    @app.exception_handler(errors.CsbsError)
    async def _csbs(request: Request, exc: errors.CsbsError) -> JSONResponse:
        return response_for(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "CSBS.9001", validation_message(exc), path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"The resource {request.url.path} could not be found."
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}."
        else:
            message = str(exc.detail)
        return error_response(
            exc.status_code, "CSBS.9001", message, dict(exc.headers or {}), request.url.path
        )
