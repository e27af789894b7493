"""Projects, users, roles and what each role may do."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum


class Role(enum.StrEnum):
    """A user's role in a project."""

    #: may read and act in every project, and list across tenants
    ADMIN = "admin"
    #: may read and act in its project
    MEMBER = "member"
    #: may only read in its project
    READER = "reader"


@dataclasses.dataclass(frozen=True)
class Project:
    id: str
    name: str
    domain_id: str
    enabled: bool
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    name: str
    enabled: bool
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the holder of a valid token."""

    user_id: str
    user_name: str
    project_id: str
    project_name: str
    role: Role
    issued_at: dt.datetime
    expires_at: dt.datetime

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_read(self, project_id: str) -> bool:
        """Whether this principal may read resources of `project_id`."""
        return self.is_admin or project_id == self.project_id

    def may_act(self, project_id: str) -> bool:
        """Whether this principal may change resources of `project_id`."""
        return self.is_admin or (project_id == self.project_id and self.role is Role.MEMBER)


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: the secret (shown once) and who it speaks for."""

    secret: str
    principal: Principal
    issued_at: dt.datetime
