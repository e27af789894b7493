"""Build a csbs runtime and an HTTP client over it, the way tests need them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import argon2
from fastapi.testclient import TestClient

from csbs import app as composition
from csbs.api.app import create_app
from csbs.config import Settings
from csbs.domain.clock import FrozenClock
from csbs.domain.identity import Role

ADMIN_PASSWORD = "admin-secret-for-tests"
#: Argon2id with the smallest sound cost: tests hash hundreds of passwords.
FAST_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


@dataclasses.dataclass
class Env:
    runtime: composition.Runtime
    client: TestClient
    clock: FrozenClock

    @property
    def services(self) -> Any:
        return self.runtime.services

    def token(self, user: str, password: str, project: str) -> str:
        r = self.client.post(
            "/v3/auth/tokens", json=password_auth(user, password, project_name=project)
        )
        assert r.status_code == 201, r.text
        return str(r.headers["X-Subject-Token"])

    def admin_token(self) -> str:
        return self.token("admin", ADMIN_PASSWORD, "admin")

    def add_user(self, name: str, project: str, role: Role, password: str = "pw-" + "x" * 8) -> str:
        """Create the project if needed, then the user; return a token for it."""
        identity = self.services.identity
        if not any(p.name == project for p in identity.list_projects()):
            identity.create_project(project)
        identity.create_user(name, password, project, role)
        return self.token(name, password, project)

    def project_id(self, name: str) -> str:
        return next(p.id for p in self.services.identity.list_projects() if p.name == name)


def password_auth(
    user: str,
    password: str,
    *,
    project_name: str | None = None,
    project_id: str | None = None,
) -> dict[str, Any]:
    project: dict[str, Any] = (
        {"id": project_id} if project_id else {"name": project_name, "domain": {"id": "default"}}
    )
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"id": "default"}, "password": password}
                },
            },
            "scope": {"project": project},
        }
    }


def make_env(tmp_path: Path, db_url: str, **settings: Any) -> Env:
    clock = FrozenClock()
    s = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        admin_password=ADMIN_PASSWORD,  # type: ignore[arg-type]
        embedded_workers=False,
        **settings,
    )
    runtime = composition.build(s, clock=clock, password_hasher=FAST_HASHER)
    composition.prepare(runtime)
    client = TestClient(create_app(runtime.services, runtime.edge), raise_server_exceptions=False)
    return Env(runtime=runtime, client=client, clock=clock)
