"""The web console's static files, served at `/console/` beside the API they call.

The console is a client of the public API only: these routes hand out files and nothing
else, so everything a person does in it goes through the same calls a script makes
(decision 0016)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

#: Package data beside the code (pyproject's package-data ships it in the wheel).
CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
PATH = "/console"

# Only the package's own files may run or load: no CDN, no inline script, nothing framed.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # An upgrade of csbs must not leave a browser with yesterday's modules.
    "Cache-Control": "no-cache",
}


class _ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


def wants_html(accept: str | None) -> bool:
    """Whether a `GET /` comes from a browser (asking for HTML) rather than an API client."""
    return accept is not None and "text/html" in accept.lower()


def console_redirect() -> RedirectResponse:
    return RedirectResponse(f"{PATH}/", status_code=303)


def install(app: FastAPI) -> None:
    """Serve the console at `/console/` (and `/console` redirects there)."""

    @app.get(PATH, include_in_schema=False)
    def console_root() -> RedirectResponse:
        return console_redirect()

    app.mount(f"{PATH}/", _ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console")
