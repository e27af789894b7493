"""Keystone v3 token request and response bodies (the subset CSBS clients use)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from csbs.domain.identity import Project, Role, User


class _Lenient(BaseModel):
    # Clients send more than we read (e.g. "domain" names, "methods" extras): ignore it.
    model_config = ConfigDict(extra="ignore")


class DomainRef(_Lenient):
    id: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=255)


class PasswordUser(_Lenient):
    id: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=255)
    domain: DomainRef | None = None
    password: str = Field(max_length=4096)

    @model_validator(mode="after")
    def _id_or_name(self) -> PasswordUser:
        if not self.id and not self.name:
            raise ValueError("user needs an id or a name")
        return self


class PasswordMethod(_Lenient):
    user: PasswordUser


class TokenMethod(_Lenient):
    id: str = Field(min_length=1, max_length=4096)


class Identity(_Lenient):
    methods: list[Literal["password", "token"]] = Field(min_length=1, max_length=1)
    password: PasswordMethod | None = None
    token: TokenMethod | None = None

    @model_validator(mode="after")
    def _method_given(self) -> Identity:
        method = self.methods[0]
        if getattr(self, method) is None:
            raise ValueError(f"the {method} method needs its {method!r} object")
        return self


class ProjectScope(_Lenient):
    id: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=255)
    domain: DomainRef | None = None

    @model_validator(mode="after")
    def _id_or_name(self) -> ProjectScope:
        if not self.id and not self.name:
            raise ValueError("project scope needs an id or a name")
        return self


class Scope(_Lenient):
    project: ProjectScope


class Auth(_Lenient):
    identity: Identity
    #: required with a password; a token without one keeps the token's own project
    scope: Scope | None = None

    @model_validator(mode="after")
    def _scoped(self) -> Auth:
        if self.scope is None and self.identity.methods[0] == "password":
            raise ValueError("a password needs a project scope: unscoped tokens do not exist")
        return self


class TokenRequest(_Lenient):
    auth: Auth


class TokenResponse(BaseModel):
    token: dict[str, Any]


class ProjectCreate(_Lenient):
    name: str = Field(min_length=1, max_length=64)


class ProjectCreateBody(_Lenient):
    project: ProjectCreate


class UserCreate(_Lenient):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=4096)
    #: Keystone's field: the project the user gets its role in (id or name)
    default_project_id: str = Field(min_length=1, max_length=255)
    #: our extension (Keystone assigns roles by a call of their own): admin, member, reader
    role: Role = Role.MEMBER


class UserCreateBody(_Lenient):
    user: UserCreate


def project_body(p: Project) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "domain_id": p.domain_id,
        "enabled": p.enabled,
        "is_domain": False,
        "parent_id": p.domain_id,
    }


def user_body(u: User, roles: list[tuple[str, Role]]) -> dict[str, Any]:
    return {
        "id": u.id,
        "name": u.name,
        "domain_id": "default",
        "enabled": u.enabled,
        "password_expires_at": None,
        # our extension: the user's role in each project, by project name
        "roles": [{"project": name, "role": role.value} for name, role in roles],
    }
