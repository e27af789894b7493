"""`csbs admin` and `csbs db` against both engines, as an operator's script would use them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from csbs.cli import app
from csbs.domain.identity import Role
from tests.support.runtime import FAST_HASHER

runner = CliRunner()


def _invoke(*args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_admin_commands(tmp_path: Path, db_url: str) -> None:
    common = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]
    assert "database at revision" in _invoke("db", "upgrade", *common)
    project_id = _invoke("admin", "project", "create", "tenant1", *common).strip()
    assert len(project_id) == 32
    assert "tenant1" in _invoke("admin", "project", "list", *common)
    user_id = _invoke(
        "admin",
        "user",
        "create",
        "bob",
        "--project",
        "tenant1",
        "--role",
        "reader",
        *common,
        env={"CSBS_USER_PASSWORD": "bobs-password"},
    ).strip()
    assert len(user_id) == 32
    assert "tenant1:reader" in _invoke("admin", "user", "list", *common)
    token = _invoke("admin", "token", "--user", "bob", "--project", "tenant1", *common).strip()

    # The printed token is a real one: the service accepts it and knows its role.
    from csbs import app as composition
    from csbs.config import Settings

    runtime = composition.build(
        Settings(data_dir=tmp_path / "data", database_url=db_url), password_hasher=FAST_HASHER
    )
    try:
        principal = runtime.services.identity.validate(token)
        assert principal.project_id == project_id
        assert principal.role is Role.READER
        issued = runtime.services.identity.authenticate(
            password="bobs-password", user_name="bob", project_name="tenant1"
        )
        assert issued.principal.user_id == user_id
    finally:
        runtime.close()


def test_duplicate_project_fails_cleanly(tmp_path: Path, db_url: str) -> None:
    common = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]
    _invoke("admin", "project", "create", "dup", *common)
    result = runner.invoke(app, ["admin", "project", "create", "dup", *common])
    assert result.exit_code == 1
    assert "already exists" in result.output
