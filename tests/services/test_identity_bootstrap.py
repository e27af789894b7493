"""Two API processes starting at once on a new database both create the admin account:
the one whose insert loses to the other's takes the other's account, and starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from csbs import app as composition
from csbs.config import Settings
from csbs.db.queries import identity as queries
from csbs.services import identity
from tests.support.runtime import FAST_HASHER


def test_a_bootstrap_that_loses_the_race_takes_the_winners_account(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def runtime(name: str, password: str) -> composition.Runtime:
        settings = Settings(
            data_dir=tmp_path / name,
            database_url=db_url,
            admin_password=password,  # type: ignore[arg-type]
            embedded_workers=False,
        )
        return composition.build(settings, password_hasher=FAST_HASHER)

    first, second = runtime("a", "password-of-a"), runtime("b", "password-of-a")
    try:
        composition.prepare(first)
        # The second process looked before the first committed: it sees no admin project
        # once, inserts its own, and the unique name refuses it.
        real = queries.find_project_by_name
        looks: list[str] = []

        def late(session: Any, name: str) -> Any:
            looks.append(name)
            return None if len(looks) == 1 else real(session, name)

        monkeypatch.setattr(identity.q, "find_project_by_name", late)
        # no password generated: the winner's account
        assert second.services.identity.bootstrap("password-of-a") is None
        assert looks == [identity.ADMIN_PROJECT, identity.ADMIN_PROJECT]
        monkeypatch.undo()
        projects = [p for p in first.services.identity.list_projects() if p.name == "admin"]
        assert len(projects) == 1
        issued = first.services.identity.authenticate(
            password="password-of-a", user_name="admin", project_name="admin"
        )
        assert issued.principal.project_id == projects[0].id
    finally:
        first.close()
        second.close()
