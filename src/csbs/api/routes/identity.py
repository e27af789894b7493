"""Keystone-v3-compatible identity subset: version document, issue / validate / revoke tokens,
and for administrators the projects and users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from csbs.api.deps import PrincipalDep, ServicesDep, base_url, edge_of
from csbs.api.schemas.identity import (
    ProjectCreateBody,
    TokenRequest,
    UserCreateBody,
    project_body,
    user_body,
)
from csbs.domain import errors
from csbs.domain.identity import IssuedToken, Principal
from csbs.services.container import Services

router = APIRouter(tags=["identity"])

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}
#: The catalog's service entry for csbs: OpenStack SDKs look CSBS up by this type.
SERVICE_TYPE = "data-protect"


def _ts(value: Any) -> str:
    return str(value.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def _endpoints(service: str, url: str, region: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{service}-{interface}",
            "interface": interface,
            "region": region,
            "region_id": region,
            "url": url,
        }
        for interface in ("public", "internal", "admin")
    ]


def token_body(
    principal: Principal,
    issued_at: Any,
    request: Request,
    services: Services,
    methods: list[str] | None = None,
) -> dict[str, Any]:
    base = base_url(request)
    region = edge_of(request).options.region
    endpoint_url = f"{base}/v1/{principal.project_id}"
    return {
        "token": {
            "methods": methods or ["password"],
            "expires_at": _ts(principal.expires_at),
            "issued_at": _ts(issued_at),
            "user": {
                "id": principal.user_id,
                "name": principal.user_name,
                "domain": DEFAULT_DOMAIN,
                "password_expires_at": None,
            },
            "project": {
                "id": principal.project_id,
                "name": principal.project_name,
                "domain": DEFAULT_DOMAIN,
            },
            "roles": [{"id": principal.role.value, "name": principal.role.value}],
            "is_domain": False,
            "catalog": [
                {
                    "id": "csbs",
                    "type": SERVICE_TYPE,
                    "name": "csbs",
                    "endpoints": _endpoints("csbs", endpoint_url, region),
                },
                # Clients that re-authenticate or discover through the catalog (the
                # openstack CLI, openstacksdk) look Keystone itself up here.
                {
                    "id": "keystone",
                    "type": "identity",
                    "name": "keystone",
                    "endpoints": _endpoints("keystone", f"{base}/v3", region),
                },
            ],
        }
    }


@router.get("/v3", summary="Identity API version document")
@router.get("/v3/", include_in_schema=False)
def identity_version(request: Request, services: ServicesDep) -> dict[str, Any]:
    base = base_url(request)
    return {
        "version": {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{base}/v3/"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }
    }


def _check_domain(domain: Any) -> None:
    """Only the default domain exists; naming any other fails authentication."""
    if domain is None:
        return
    if (domain.id is not None and domain.id != "default") or (
        domain.name is not None and domain.name not in ("Default", "default")
    ):
        raise errors.Unauthenticated("The request you have made requires authentication.")


@router.post("/v3/auth/tokens", status_code=201, summary="Issue a project-scoped token")
def issue_token(body: TokenRequest, request: Request, services: ServicesDep) -> JSONResponse:
    identity = body.auth.identity
    project = body.auth.scope.project if body.auth.scope else None
    if project is not None:
        _check_domain(project.domain)
    method = identity.methods[0]
    issued: IssuedToken
    if identity.token is not None and method == "token":
        issued = services.identity.rescope(
            identity.token.id,
            project_id=project.id if project else None,
            project_name=project.name if project else None,
        )
    else:
        assert identity.password is not None and project is not None  # the schema's checks
        user = identity.password.user
        _check_domain(user.domain)
        issued = services.identity.authenticate(
            password=user.password,
            user_id=user.id,
            user_name=user.name,
            project_id=project.id,
            project_name=project.name,
        )
    return JSONResponse(
        token_body(issued.principal, issued.issued_at, request, services, methods=[method]),
        status_code=201,
        headers={"X-Subject-Token": issued.secret},
    )


@router.get("/v3/auth/tokens", summary="Validate a token")
def validate_token(
    request: Request,
    services: ServicesDep,
    caller: PrincipalDep,
    x_subject_token: Annotated[str | None, Header(alias="X-Subject-Token")] = None,
) -> JSONResponse:
    subject = caller
    if x_subject_token:
        try:
            subject = services.identity.validate(x_subject_token)
        except errors.Unauthenticated as e:
            # Keystone: the caller is authenticated; the token it asks about is not found.
            raise errors.NotFound("The token could not be found.") from e
    if subject.user_id != caller.user_id and not caller.is_admin:
        raise errors.Forbidden("Only administrators may validate other users' tokens.")
    return JSONResponse(
        token_body(subject, subject.issued_at, request, services),
        headers={"X-Subject-Token": x_subject_token or ""},
    )


@router.delete("/v3/auth/tokens", status_code=204, summary="Revoke a token")
def revoke_token(
    services: ServicesDep,
    caller: PrincipalDep,
    x_auth_token: Annotated[str | None, Header(alias="X-Auth-Token")] = None,
    x_subject_token: Annotated[str | None, Header(alias="X-Subject-Token")] = None,
) -> Response:
    subject = x_subject_token or x_auth_token or ""
    if x_subject_token and x_subject_token != x_auth_token:
        try:
            target = services.identity.validate(x_subject_token)
        except errors.Unauthenticated as e:
            raise errors.NotFound("The token could not be found.") from e
        if target.user_id != caller.user_id and not caller.is_admin:
            raise errors.Forbidden("Only administrators may revoke other users' tokens.")
    services.identity.revoke(subject)
    return Response(status_code=204)


def _admin(caller: Principal, what: str) -> None:
    if not caller.is_admin:
        raise errors.Forbidden(f"Only administrators may {what}.")


@router.get("/v3/projects", summary="List projects (admin)")
def list_projects(services: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    _admin(caller, "list projects")
    return {"projects": [project_body(p) for p in services.identity.list_projects()]}


@router.post("/v3/projects", status_code=201, summary="Create a project (admin)")
def create_project(
    body: ProjectCreateBody, services: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    _admin(caller, "create projects")
    return {"project": project_body(services.identity.create_project(body.project.name))}


@router.get("/v3/users", summary="List users and their roles (admin)")
def list_users(services: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    _admin(caller, "list users")
    return {"users": [user_body(u, roles) for u, roles in services.identity.list_users()]}


@router.post("/v3/users", status_code=201, summary="Create a user with a role in a project (admin)")
def create_user(
    body: UserCreateBody, services: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    _admin(caller, "create users")
    u = body.user
    # Keystone refuses a name taken; the command line's `user create` is the one that adds a
    # role to an existing user (and sets its password).
    if any(x.name == u.name for x, _ in services.identity.list_users()):
        raise errors.Conflict(f"user {u.name!r} already exists", code="CSBS.9001")
    user = services.identity.create_user(u.name, u.password, u.default_project_id, u.role)
    roles = next(r for x, r in services.identity.list_users() if x.id == user.id)
    return {"user": user_body(user, roles)}
