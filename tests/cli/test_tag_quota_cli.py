"""`csbs tag`, `csbs backup list --tag` and `csbs admin quota` on both engines."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from csbs import app as composition
from csbs.cli import app
from csbs.config import Settings
from csbs.domain.backups import Tag
from csbs.domain.tags import TagKind
from tests.support.runtime import FAST_HASHER
from tests.support.seed import seed_backup, seed_policy

runner = CliRunner()


def _run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_tag_and_quota_commands(tmp_path: Path, db_url: str) -> None:
    common = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]
    _run("db", "upgrade", *common)
    _run("admin", "project", "create", "alpha", *common)
    runtime = composition.build(
        Settings(data_dir=tmp_path / "data", database_url=db_url), password_hasher=FAST_HASHER
    )
    try:
        services = runtime.services
        pid = services.identity.resolve_project("alpha").id
        b1 = seed_backup(services, pid, "one")
        b2 = seed_backup(services, pid, "two", tags=[("env", "dev")])
        policy = seed_policy(services, pid, "nightly")

        _run("tag", "add", b1.id, "env=prod", "team=a", "empty=", *common)
        assert services.tags.tags(TagKind.BACKUP, pid, b1.id) == (
            Tag("empty", ""),
            Tag("env", "prod"),
            Tag("team", "a"),
        )
        out = _run("tag", "list", b1.id, *common)
        assert "env" in out and "prod" in out and "team" in out
        _run("tag", "remove", b1.id, "team", "empty=nope", *common)
        assert services.tags.tags(TagKind.BACKUP, pid, b1.id) == (
            Tag("empty", ""),
            Tag("env", "prod"),
        )
        out = _run("tag", "add", b1.id, *[f"k{i}=v" for i in range(9)], *common, code=1)
        assert "CSBS.7000" in out
        out = _run("tag", "add", b1.id, "novalue", *common, code=1)
        assert "CSBS.9001" in out
        out = _run("tag", "list", "no-such-backup", *common, code=1)
        assert "CSBS.3001" in out

        _run("tag", "add", policy, "tier=gold", "--policy", "--project", "alpha", *common)
        assert services.tags.tags(TagKind.POLICY, pid, policy) == (Tag("tier", "gold"),)
        out = _run("tag", "add", policy, "tier=gold", "--policy", *common, code=1)
        assert "--project" in out

        out = _run("backup", "list", "--project", "alpha", "--tag", "env=prod", *common)
        assert b1.id in out and b2.id not in out
        out = _run("backup", "list", "--tag", "env=dev", "--tag", "env=prod", *common)
        assert b1.id not in out and b2.id not in out
        out = _run("backup", "list", "--tag", "env=dev", *common)
        assert b2.id in out and b1.id not in out

        out = _run("admin", "quota", "show", "--project", "alpha", *common)
        assert "600" in out and "-1" in out
        _run("admin", "quota", "set", "--project", "alpha", "--backups", "3", *common)
        _run("admin", "quota", "set", "--project", pid, "--capacity-gb", "7", *common)
        usage = services.quotas.usage(pid)
        assert (usage.quotas.backups, usage.quotas.capacity_gb, usage.backups) == (3, 7, 2)
        out = _run(
            "admin", "quota", "set", "--project", "alpha", "--backups", "-2", *common, code=1
        )
        assert "CSBS.9001" in out
        assert services.quotas.usage(pid).quotas.backups == 3
    finally:
        runtime.close()
