"""Identity: projects, users, roles, and the tokens that speak for them.

Passwords are hashed with Argon2id (argon2-cffi). Tokens are 256-bit random secrets; only
their SHA-256 is stored, so a copy of the database cannot be used to call the API.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets

import argon2
import sqlalchemy.exc
from sqlalchemy import orm

from csbs.db.engine import Database
from csbs.db.queries import identity as q
from csbs.domain import errors
from csbs.domain.clock import Clock
from csbs.domain.identity import IssuedToken, Principal, Project, Role, User
from csbs.domain.ids import new_hex_id
from csbs.domain.quotas import ProjectNotFound
from csbs.services.token_cache import TokenCache

ADMIN_PROJECT = "admin"
ADMIN_USER = "admin"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,255}$")
_AUTH_FAILED = "The request you have made requires authentication."


def hash_token(secret: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise errors.InvalidInput(f"{kind} name must be 1-255 characters of [A-Za-z0-9_.@-]")


def _checked_hash(secret: str | None) -> str:
    """The stored form of a well-formed token (401 for a missing or malformed one)."""
    if not secret:
        raise errors.Unauthenticated("Missing X-Auth-Token header.")
    if not _TOKEN_RE.match(secret):
        raise errors.Unauthenticated("The token is malformed.")
    return hash_token(secret)


class IdentityService:
    """Authenticates users and validates tokens."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        token_ttl: dt.timedelta,
        hasher: argon2.PasswordHasher | None = None,
        token_cache_seconds: float = 0.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._ttl = token_ttl
        self._tokens = TokenCache(clock, token_cache_seconds)
        self._hasher = hasher or argon2.PasswordHasher()
        self._operator: tuple[User, Project] | None = None
        # Project ids seen to exist. Projects are never deleted, so a hit stays true and
        # an administrator's calls in another project read the database once per project.
        self._known_projects: set[str] = set()

    @functools.cached_property
    def _dummy_hash(self) -> str:
        """Verified against when the user does not exist, so both paths cost the same time.
        Made at the first login that needs it: a hash costs a third of a second, which a
        command that authenticates nobody (most of the command line) should not pay."""
        return self._hasher.hash(secrets.token_urlsafe(16))

    def prepare_logins(self) -> None:
        """Make what every login needs now (a service that answers logins calls it before
        the first, so that even that one takes as long for an unknown user)."""
        _ = self._dummy_hash

    # -- administration -------------------------------------------------------------------

    def bootstrap(self, admin_password: str | None) -> str | None:
        """Create the admin project and user on first start.

        Returns the generated password when one had to be generated (shown once), else None.
        When `admin_password` is given, the admin user's password is set to it. Processes
        that start at once on a new database (two API machines) race to create them: the
        loser's insert fails on the unique name, and its second look finds the winner's.
        """
        try:
            return self._bootstrap(admin_password)
        except sqlalchemy.exc.IntegrityError:
            return self._bootstrap(admin_password)

    def _bootstrap(self, admin_password: str | None) -> str | None:
        generated: str | None = None
        with self._db.write() as s:
            project = q.find_project_by_name(s, ADMIN_PROJECT)
            if project is None:
                project = q.add_project(s, new_hex_id(), ADMIN_PROJECT, self._clock.now())
            found = q.find_user_by_name(s, ADMIN_USER)
            if found is None:
                if admin_password is None:
                    generated = admin_password = secrets.token_urlsafe(18)
                user = q.add_user(
                    s,
                    new_hex_id(),
                    ADMIN_USER,
                    self._hasher.hash(admin_password),
                    self._clock.now(),
                )
            else:
                user, current_hash = found
                if admin_password is not None and not self._verify(current_hash, admin_password):
                    q.set_password_hash(s, user.id, self._hasher.hash(admin_password))
            q.assign_role(s, user.id, project.id, Role.ADMIN)
        return generated

    def create_project(self, name: str) -> Project:
        _check_name("project", name)
        try:
            with self._db.write() as s:
                return q.add_project(s, new_hex_id(), name, self._clock.now())
        except sqlalchemy.exc.IntegrityError as e:
            raise errors.Conflict(f"project {name!r} already exists", code="CSBS.9001") from e

    def resolve_project(self, name_or_id: str) -> Project:
        """The project with this name, or else this id. Raises NotFound."""
        with self._db.read() as s:
            p = q.find_project_by_name(s, name_or_id) or q.get_project(s, name_or_id)
        if p is None:
            raise errors.NotFound(f"project {name_or_id!r} not found")
        return p

    def require_project(self, project_id: str) -> None:
        """Raise `ProjectNotFound` (404) unless a project has this id: an administrator
        may name any project in a path, and one that does not exist is not an empty one."""
        if project_id in self._known_projects:
            return
        with self._db.read() as s:
            found = q.get_project(s, project_id)
        if found is None:
            raise ProjectNotFound(project_id)
        self._known_projects.add(project_id)

    def list_projects(self) -> list[Project]:
        with self._db.read() as s:
            return q.list_projects(s)

    def create_user(self, name: str, password: str, project: str, role: Role) -> User:
        """Create user `name` with `role` in `project` (name or id); add the role if it exists."""
        _check_name("user", name)
        if not password:
            raise errors.InvalidInput("password must not be empty")
        with self._db.write() as s:
            p = q.find_project_by_name(s, project) or q.get_project(s, project)
            if p is None:
                raise errors.NotFound(f"project {project!r} not found")
            found = q.find_user_by_name(s, name)
            if found is None:
                user = q.add_user(
                    s, new_hex_id(), name, self._hasher.hash(password), self._clock.now()
                )
            else:
                user = found[0]
                q.set_password_hash(s, user.id, self._hasher.hash(password))
            q.assign_role(s, user.id, p.id, role)
            return user

    def list_users(self) -> list[tuple[User, list[tuple[str, Role]]]]:
        with self._db.read() as s:
            return q.list_users(s)

    def issue_token_for(self, user_name: str, project: str) -> IssuedToken:
        """Issue a token without a password (operator command line only)."""
        with self._db.write() as s:
            found = q.find_user_by_name(s, user_name)
            p = q.find_project_by_name(s, project) or q.get_project(s, project)
            if found is None or p is None:
                raise errors.NotFound("no such user or project")
            return self._issue(s, found[0], p)

    # -- the API's half ---------------------------------------------------------------------

    def authenticate(
        self,
        *,
        password: str,
        user_name: str | None = None,
        user_id: str | None = None,
        project_id: str | None = None,
        project_name: str | None = None,
    ) -> IssuedToken:
        """Check a password and issue a project-scoped token.

        Raises:
            Unauthenticated: unknown user, wrong password, or no role in the project; the
                message is the same in every case so it does not tell which.
        """
        with self._db.write() as s:
            found = (
                q.find_user_by_id(s, user_id)
                if user_id
                else q.find_user_by_name(s, user_name or "")
            )
            if found is None:
                self._verify(self._dummy_hash, password)
                raise errors.Unauthenticated(_AUTH_FAILED)
            user, password_hash = found
            if not self._verify(password_hash, password) or not user.enabled:
                raise errors.Unauthenticated(_AUTH_FAILED)
            if self._hasher.check_needs_rehash(password_hash):
                q.set_password_hash(s, user.id, self._hasher.hash(password))
            project = (
                q.get_project(s, project_id)
                if project_id
                else q.find_project_by_name(s, project_name or "")
            )
            if project is None or not project.enabled:
                raise errors.Unauthenticated(_AUTH_FAILED)
            return self._issue(s, user, project)

    def rescope(
        self,
        secret: str,
        *,
        project_id: str | None = None,
        project_name: str | None = None,
    ) -> IssuedToken:
        """Keystone's token method: a new token for the same user, scoped to a project the
        user has a role in (the token's own when none is named), with that role, expiring
        no later than the token it was made from.

        Raises:
            Unauthenticated: an invalid token, or no role in the named project.
        """
        principal = self.validate(secret)
        with self._db.write() as s:
            found = q.find_user_by_id(s, principal.user_id)
            if found is None or not found[0].enabled:
                raise errors.Unauthenticated(_AUTH_FAILED)
            if project_id is None and project_name is None:
                project_id = principal.project_id
            project = (
                q.get_project(s, project_id)
                if project_id
                else q.find_project_by_name(s, project_name or "")
            )
            if project is None or not project.enabled:
                raise errors.Unauthenticated(_AUTH_FAILED)
            return self._issue(s, found[0], project, not_after=principal.expires_at)

    def validate(self, secret: str | None) -> Principal:
        """The principal a token speaks for.

        Raises:
            Unauthenticated: missing, malformed, unknown, revoked or expired token.
        """
        token_hash = _checked_hash(secret)
        principal = self._tokens.get(token_hash)
        if principal is not None:
            return self._unexpired(principal)
        generation = self._tokens.generation
        with self._db.read() as s:
            principal = q.principal_for_token(s, token_hash)
        if principal is None:
            raise errors.Unauthenticated("The token is invalid or has been revoked.")
        self._tokens.put(token_hash, principal, generation)
        return self._unexpired(principal)

    def remembered(self, secret: str | None) -> Principal | None:
        """The principal of a recently validated token, without touching the database;
        None when only `validate` can tell.

        Raises:
            Unauthenticated: missing, malformed or expired token.
        """
        principal = self._tokens.get(_checked_hash(secret))
        return None if principal is None else self._unexpired(principal)

    def _unexpired(self, principal: Principal) -> Principal:
        if principal.expires_at <= self._clock.now():
            raise errors.Unauthenticated("The token has expired.")
        return principal

    def operator(self) -> Principal:
        """Who a process of the service's own user calls as over `csbs serve`'s control
        socket: the administrator (user `admin` in project `admin`), the authority the same
        user has by opening the database itself (decision 0018). No token is involved: the
        kernel vouches for the caller. The first call reads the two ids; they never change.

        Raises:
            Unauthenticated: the administrator does not exist (the schema was never prepared).
        """
        user, project = self._operator_ids()
        now = self._clock.now()
        return Principal(
            user_id=user.id,
            user_name=user.name,
            project_id=project.id,
            project_name=project.name,
            role=Role.ADMIN,
            issued_at=now,
            expires_at=now + self._ttl,
        )

    def _operator_ids(self) -> tuple[User, Project]:
        if self._operator is not None:
            return self._operator
        with self._db.read() as s:
            project = q.find_project_by_name(s, ADMIN_PROJECT)
            found = q.find_user_by_name(s, ADMIN_USER)
        if project is None or found is None:
            raise errors.Unauthenticated(_AUTH_FAILED)
        self._operator = (found[0], project)
        return self._operator

    def revoke(self, secret: str) -> None:
        """Revoke a token. Raises NotFound when it is unknown or already revoked."""
        if not _TOKEN_RE.match(secret):
            raise errors.NotFound("token not found")
        token_hash = hash_token(secret)
        try:
            with self._db.write() as s:
                if not q.revoke_token(s, token_hash, self._clock.now()):
                    raise errors.NotFound("token not found")
        finally:
            # After the commit, so the next validation here reads the revocation.
            self._tokens.forget(token_hash)

    # -- internals --------------------------------------------------------------------------

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def _issue(
        self,
        s: orm.Session,
        user: User,
        project: Project,
        *,
        not_after: dt.datetime | None = None,
    ) -> IssuedToken:
        role = q.get_role(s, user.id, project.id)
        if role is None:
            raise errors.Unauthenticated(_AUTH_FAILED)
        now = self._clock.now()
        expires = now + self._ttl
        if not_after is not None:
            expires = min(expires, not_after)
        secret = secrets.token_urlsafe(32)
        q.add_token(s, hash_token(secret), user.id, project.id, now, expires)
        # Expired tokens are dropped opportunistically: a day after expiry they are useless.
        q.purge_expired_tokens(s, now - dt.timedelta(days=1))
        principal = Principal(
            user_id=user.id,
            user_name=user.name,
            project_id=project.id,
            project_name=project.name,
            role=role,
            issued_at=now,
            expires_at=expires,
        )
        return IssuedToken(secret=secret, principal=principal, issued_at=now)
