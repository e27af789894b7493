"""SQL for projects, users, role assignments and tokens."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db import tables
from csbs.domain import identity


def _project(row: tables.Project) -> identity.Project:
    return identity.Project(
        id=row.id,
        name=row.name,
        domain_id=row.domain_id,
        enabled=row.enabled,
        created_at=row.created_at,
    )


def _user(row: tables.User) -> identity.User:
    return identity.User(id=row.id, name=row.name, enabled=row.enabled, created_at=row.created_at)


def add_project(s: orm.Session, project_id: str, name: str, now: dt.datetime) -> identity.Project:
    row = tables.Project(
        id=project_id, name=name, domain_id="default", enabled=True, created_at=now
    )
    s.add(row)
    s.flush()
    return _project(row)


def get_project(s: orm.Session, project_id: str) -> identity.Project | None:
    row = s.get(tables.Project, project_id)
    return _project(row) if row else None


def lock_project(s: orm.Session, project_id: str) -> bool:
    """Lock the project's row for the rest of the transaction (PostgreSQL; SQLite's write
    lock already serialises): the serialisation point of checks made per project, such as
    quotas and policy limits. Returns whether the project exists."""
    locked = s.execute(
        sa.select(tables.Project.id).where(tables.Project.id == project_id).with_for_update()
    ).first()
    return locked is not None


def find_project_by_name(s: orm.Session, name: str) -> identity.Project | None:
    row = s.scalars(sa.select(tables.Project).where(tables.Project.name == name)).one_or_none()
    return _project(row) if row else None


def list_projects(s: orm.Session) -> list[identity.Project]:
    rows = s.scalars(sa.select(tables.Project).order_by(tables.Project.name))
    return [_project(r) for r in rows]


def add_user(
    s: orm.Session, user_id: str, name: str, password_hash: str, now: dt.datetime
) -> identity.User:
    row = tables.User(id=user_id, name=name, password_hash=password_hash, created_at=now)
    s.add(row)
    s.flush()
    return _user(row)


def find_user_by_name(s: orm.Session, name: str) -> tuple[identity.User, str] | None:
    """The user named `name` and its password hash."""
    row = s.scalars(sa.select(tables.User).where(tables.User.name == name)).one_or_none()
    return (_user(row), row.password_hash) if row else None


def find_user_by_id(s: orm.Session, user_id: str) -> tuple[identity.User, str] | None:
    row = s.get(tables.User, user_id)
    return (_user(row), row.password_hash) if row else None


def set_password_hash(s: orm.Session, user_id: str, password_hash: str) -> None:
    s.execute(
        sa.update(tables.User).where(tables.User.id == user_id).values(password_hash=password_hash)
    )


def assign_role(s: orm.Session, user_id: str, project_id: str, role: identity.Role) -> None:
    row = s.get(tables.RoleAssignment, (user_id, project_id))
    if row is None:
        s.add(tables.RoleAssignment(user_id=user_id, project_id=project_id, role=role.value))
    else:
        row.role = role.value
    s.flush()


def get_role(s: orm.Session, user_id: str, project_id: str) -> identity.Role | None:
    row = s.get(tables.RoleAssignment, (user_id, project_id))
    return identity.Role(row.role) if row else None


def list_users(s: orm.Session) -> list[tuple[identity.User, list[tuple[str, identity.Role]]]]:
    """Every user with its (project name, role) assignments."""
    users = list(s.scalars(sa.select(tables.User).order_by(tables.User.name)))
    rows = s.execute(
        sa.select(tables.RoleAssignment.user_id, tables.Project.name, tables.RoleAssignment.role)
        .join(tables.Project, tables.Project.id == tables.RoleAssignment.project_id)
        .order_by(tables.Project.name)
    ).all()
    by_user: dict[str, list[tuple[str, identity.Role]]] = {}
    for user_id, project_name, role in rows:
        by_user.setdefault(user_id, []).append((project_name, identity.Role(role)))
    return [(_user(u), by_user.get(u.id, [])) for u in users]


def add_token(
    s: orm.Session,
    token_hash: str,
    user_id: str,
    project_id: str,
    issued_at: dt.datetime,
    expires_at: dt.datetime,
) -> None:
    s.add(
        tables.Token(
            token_hash=token_hash,
            user_id=user_id,
            project_id=project_id,
            issued_at=issued_at,
            expires_at=expires_at,
        )
    )
    s.flush()


def principal_for_token(s: orm.Session, token_hash: str) -> identity.Principal | None:
    """The principal of an unrevoked token, whatever its expiry (the caller checks that)."""
    row = s.execute(
        sa.select(
            tables.Token.issued_at,
            tables.Token.expires_at,
            tables.User.id,
            tables.User.name,
            tables.Project.id,
            tables.Project.name,
            tables.RoleAssignment.role,
        )
        .join(tables.User, tables.User.id == tables.Token.user_id)
        .join(tables.Project, tables.Project.id == tables.Token.project_id)
        .join(
            tables.RoleAssignment,
            sa.and_(
                tables.RoleAssignment.user_id == tables.Token.user_id,
                tables.RoleAssignment.project_id == tables.Token.project_id,
            ),
        )
        .where(
            tables.Token.token_hash == token_hash,
            tables.Token.revoked_at.is_(None),
            tables.User.enabled.is_(True),
            tables.Project.enabled.is_(True),
        )
    ).one_or_none()
    if row is None:
        return None
    issued_at, expires_at, user_id, user_name, project_id, project_name, role = row
    return identity.Principal(
        user_id=user_id,
        user_name=user_name,
        project_id=project_id,
        project_name=project_name,
        role=identity.Role(role),
        issued_at=issued_at,
        expires_at=expires_at,
    )


def revoke_token(s: orm.Session, token_hash: str, now: dt.datetime) -> bool:
    result = s.execute(
        sa.update(tables.Token)
        .where(tables.Token.token_hash == token_hash, tables.Token.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def purge_expired_tokens(s: orm.Session, before: dt.datetime) -> int:
    result = s.execute(sa.delete(tables.Token).where(tables.Token.expires_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]
