"""Dependencies handed to route functions: the services, the caller, its rights."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from csbs.api.edge import LOCAL_PEER, ApiEdge
from csbs.domain import errors
from csbs.domain.identity import Principal
from csbs.services.container import Services

# The dependencies below that do not block are coroutines: FastAPI runs a plain function
# dependency on the thread pool, and those hops cost more than the checks themselves.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_edge(request: Request) -> ApiEdge:
    return edge_of(request)


EdgeDep = Annotated[ApiEdge, Depends(get_edge)]


async def get_principal(
    request: Request,
    services: ServicesDep,
    x_auth_token: Annotated[str | None, Header(alias="X-Auth-Token")] = None,
) -> Principal:
    """The caller, from its token. 401 when the token is missing, malformed or not valid."""
    return await principal_of(services, x_auth_token, request.scope)


async def principal_of(services: Services, token: str | None, scope: Scope) -> Principal:
    """The principal of the call: the administrator for a call over the control socket
    (decision 0018), else the principal of `token` (401 when it is missing, malformed or
    not valid).

    A recently validated token is answered from memory; otherwise the database is read on
    the thread pool."""
    if LOCAL_PEER in scope:
        return await run_in_threadpool(services.identity.operator)
    principal = services.identity.remembered(token)
    if principal is None:
        principal = await run_in_threadpool(services.identity.validate, token)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
ProjectIdPath = Annotated[str, Path(min_length=1, max_length=64, description="Project id")]


async def project_reader(
    project_id: ProjectIdPath, principal: PrincipalDep, services: ServicesDep
) -> Principal:
    """A caller allowed to read in the path's project (403 otherwise; 404 when it does
    not exist)."""
    reader_in(principal, project_id)
    await existing_project(services, principal, project_id)
    return principal


async def project_actor(
    project_id: ProjectIdPath, principal: PrincipalDep, services: ServicesDep
) -> Principal:
    """A caller allowed to act in the path's project (403 otherwise; 404 when it does not
    exist)."""
    actor_in(principal, project_id)
    await existing_project(services, principal, project_id)
    return principal


async def existing_project(services: Services, principal: Principal, project_id: str) -> None:
    """404 when an administrator names a project that does not exist. A token's own
    project exists (tokens are scoped to one), so only other projects are looked up."""
    if project_id != principal.project_id:
        await run_in_threadpool(services.identity.require_project, project_id)


def reader_in(principal: Principal, project_id: str) -> Principal:
    """`principal`, if it may read in `project_id` (403 otherwise)."""
    if not principal.may_read(project_id):
        raise errors.Forbidden("The token is not valid for this project.")
    return principal


def actor_in(principal: Principal, project_id: str) -> Principal:
    """`principal`, if it may act in `project_id` (403 otherwise)."""
    if not reader_in(principal, project_id).may_act(project_id):
        raise errors.Forbidden("Your role may only read in this project.")
    return principal


ReaderDep = Annotated[Principal, Depends(project_reader)]
ActorDep = Annotated[Principal, Depends(project_actor)]


def admin_of(what: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: an administrator allowed in the path's project, who may change `what`
    (403 otherwise)."""

    async def admin(principal: Annotated[Principal, Depends(project_reader)]) -> Principal:
        if not principal.is_admin:
            raise errors.Forbidden(f"Only administrators may change {what}.")
        return principal

    return admin


def check_all_tenants(principal: Principal, all_tenants: bool | None) -> bool:
    """Whether a list spans every project; only admins may ask (403 otherwise)."""
    if all_tenants and not principal.is_admin:
        raise errors.Forbidden("Only administrators may use all_tenants.")
    return bool(all_tenants)


def edge_of(request: Request) -> ApiEdge:
    """The edge state of the application answering `request`."""
    edge: ApiEdge = request.app.state.edge
    return edge


def base_url(request: Request) -> str:
    """The public base URL of this service, without a trailing slash."""
    public_url = edge_of(request).options.public_url
    if public_url:
        return public_url.rstrip("/")
    return str(request.base_url).rstrip("/")
