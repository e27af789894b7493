"""The DELETE of a record's backups (B2), answered without FastAPI's routing and dependencies.

This call is what the service is specified around, and the one clients send in bursts: its
latency is a target (`python -m bench.deletes`). Through FastAPI, route matching across every
router, solving the dependency tree and the exception middlewares cost about half of the
call's CPU in the API process, and the API process's interpreter lock is what a burst of
calls queues on (the figures: docs/decisions/0011-the-delete-call-goes-first.md). So this
middleware takes the plain form of the call itself:
`DELETE /v1/{project_id}/providers/{provider_id}/checkpoints/{checkpoint_id}`, each segment
1-64 characters, no `root_path`. Everything else, including any other form of this call,
goes on to the application.

It does what the route does, in the same order and with the same code: the caller from its
token or the control socket (`deps.principal_of`, 401), its right to act in the project
(`deps.actor_in`, 403), then `routes.backups.accept_deletion` on the thread pool (400, 404,
or 200 with the task ids).
Domain errors become the answers the application's handlers give (`errors.response_for`).
The route `routes.backups.delete_backups` stays the documented definition of the call (the
OpenAPI schema); `tests/api/test_fast_delete.py` checks that both answer alike.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from csbs.api import deps
from csbs.api import errors as api_errors
from csbs.api.routes import backups
from csbs.domain import errors
from csbs.services.container import Services

_PATH = re.compile(r"/v1/([^/]{1,64})/providers/([^/]{1,64})/checkpoints/([^/]{1,64})")


def _route() -> BaseRoute:
    for route in backups.router.routes:
        if getattr(route, "endpoint", None) is backups.delete_backups:
            return route
    raise LookupError("routes.backups has no delete_backups route")


class FastDelete:
    """ASGI middleware: answers the plain DELETE of backups, passes on everything else."""

    def __init__(self, app: ASGIApp, *, services: Services) -> None:
        self.app = app
        self.services = services
        # Set as the matched route, so logs and metrics name the call as the route would.
        self.route = _route()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "DELETE"
            or scope.get("root_path")
            or (match := _PATH.fullmatch(scope["path"])) is None
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        project_id, provider_id, checkpoint_id = match.groups()
        token = None
        for name, value in scope["headers"]:
            if name == b"x-auth-token":
                token = value.decode("latin-1")
                break  # the first one, as the application's header parameter takes
        services = self.services
        try:
            principal = deps.actor_in(await deps.principal_of(services, token, scope), project_id)
            await deps.existing_project(services, principal, project_id)
            response = await run_in_threadpool(
                backups.accept_deletion,
                services,
                project_id,
                provider_id,
                checkpoint_id,
                QueryParams(scope["query_string"]).getlist("checkpoint_items"),
            )
        except errors.CsbsError as exc:
            response = api_errors.response_for(exc)
        await response(scope, receive, send)
