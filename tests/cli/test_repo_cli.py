"""`csbs repo check / verify / rotate-master-key` through typer, on SQLite and a file store;
and the settings a project's repository is created with, whichever command leads to it."""

from __future__ import annotations

import pathlib

import pytest
import typer
from typer.testing import CliRunner

from csbs import app as composition
from csbs import migrations
from csbs.blobstore import LocalStore
from csbs.cli import app as csbs_app
from csbs.cli.repo import open_repository, repo_app
from csbs.config import load_settings
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.repository import Repository, RepositorySettings, layout, load_or_create_master_key
from tests.repository.conftest import SMALL_CHUNK, write_image

app = typer.Typer()
app.add_typer(repo_app, name="repo")


def _backed_up(data_dir: pathlib.Path, image: pathlib.Path) -> LocalStore:
    """A repository in `data_dir` with backup b1 of project p1; its store."""
    engine = create_engine(f"sqlite:///{data_dir / 'csbs.db'}")
    migrations.upgrade(engine)
    store = LocalStore(data_dir / "repository")
    key = load_or_create_master_key(data_dir / "master.key")
    repo = Repository(engine, store, SystemClock(), key, RepositorySettings(chunk_size=SMALL_CHUNK))
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    engine.dispose()
    return store


@pytest.mark.slow
def test_repo_commands(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = _backed_up(data_dir, write_image(tmp_path / "disk.img", 40 * SMALL_CHUNK))
    runner = CliRunner()
    base = ["--data-dir", str(data_dir)]

    result = runner.invoke(app, ["repo", "check", *base, "--read-data"])
    assert result.exit_code == 0, result.output
    assert "0 missing, 0 leaked, 0 corrupt" in result.output
    result = runner.invoke(app, ["repo", "verify", "b1", "--project", "p1", *base])
    assert result.exit_code == 0, result.output

    name = sorted(store.list(layout.chunks_prefix("p1")))[0]
    blob = bytearray(store.get(name))
    blob[-1] ^= 0xFF
    store.put(name, bytes(blob))
    store.put(layout.chunk_name("p1", "cd" * 32, 123456), b"junk")
    result = runner.invoke(app, ["repo", "check", *base, "--read-data", "--repair"])
    assert result.exit_code == 1
    assert "1 leaked, 1 corrupt" in result.output and "removed 1 leaked" in result.output
    result = runner.invoke(app, ["repo", "verify", "b1", "--project", "p1", *base])
    assert result.exit_code == 1 and layout.parse_chunk_name(name).chunk_id in result.output

    new_key = tmp_path / "new.key"
    result = runner.invoke(
        app, ["repo", "rotate-master-key", "--new-key-file", str(new_key), *base]
    )
    assert result.exit_code == 0, result.output
    assert "re-wrapped 1 project keys" in result.output
    result = runner.invoke(
        app, ["repo", "check", *base], env={"CSBS_MASTER_KEY_FILE": str(new_key)}
    )
    assert result.exit_code == 0, result.output


def test_repo_check_reports_loose_modes_and_repair_tightens_them(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = _backed_up(data_dir, write_image(tmp_path / "disk.img", 8 * SMALL_CHUNK))
    chunk = sorted(store.list(layout.chunks_prefix("p1")))[0]
    shard = chunk.rsplit("/", 1)[0]
    (data_dir / "repository" / chunk).chmod(0o644)
    (data_dir / "repository" / shard).chmod(0o755)
    runner = CliRunner()
    base = ["--data-dir", str(data_dir)]

    result = runner.invoke(app, ["repo", "check", *base])
    assert result.exit_code == 1, result.output
    assert "0 missing, 0 leaked, 0 corrupt, 0 bookkeeping errors, 2 open to" in result.output
    assert f"mode: directory {shard} is 0755, want 0700" in result.output
    assert f"mode: file {chunk} is 0644, want 0600" in result.output
    result = runner.invoke(app, ["repo", "check", "--project", "p1", "--repair", *base])
    assert result.exit_code == 1, result.output
    assert "tightened 2 modes" in result.output
    result = runner.invoke(app, ["repo", "check", "--read-data", *base])
    assert result.exit_code == 0, result.output
    assert "0 open to group or others" in result.output


@pytest.mark.slow
def test_a_project_repository_takes_the_configured_chunk_size_whoever_creates_it(
    tmp_path: pathlib.Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`csbs backup create` leads to the project's repository: it is created with the
    deployment's chunk size (CSBS_CHUNK_SIZE), not the default, and `csbs repo` builds the
    same Repository as every other process."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CSBS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CSBS_DATABASE_URL", db_url)
    monkeypatch.setenv("CSBS_CHUNK_SIZE", str(64 * 1024))
    settings = load_settings()
    assert settings.chunk_size != RepositorySettings().chunk_size
    runner = CliRunner()
    assert runner.invoke(csbs_app, ["db", "upgrade"]).exit_code == 0
    disk = data_dir / "disks" / "a.img"
    disk.write_bytes(write_image(tmp_path / "disk.img", 8 * SMALL_CHUNK).read_bytes())
    added = runner.invoke(
        csbs_app, ["server", "add", "--project", "admin", "--name", "web1", "--disk", str(disk)]
    )
    assert added.exit_code == 0, added.output
    runtime = composition.build(settings)  # a worker of the same deployment
    worker = composition.make_worker(runtime, concurrency=1)
    worker.start()
    try:
        created = runner.invoke(csbs_app, ["backup", "create", added.output.strip(), "--wait"])
        assert created.exit_code == 0, created.output
        project_id = runtime.services.identity.resolve_project("admin").id
    finally:
        worker.stop(grace=5)
        runtime.close()

    with open_repository(None, None, None) as repo:
        assert repo.settings == composition.repository_settings(settings)
        record = repo.index.get_project(project_id)
        assert record is not None and record.chunk_size == 64 * 1024
    checked = runner.invoke(csbs_app, ["repo", "check", "--read-data"])
    assert checked.exit_code == 0, checked.output


def test_a_worker_configured_otherwise_creates_projects_with_the_deployments_chunk_size(
    tmp_path: pathlib.Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployment's chunk size is recorded at its first set-up; a worker started with
    another (here the default 4 MiB) still creates a new project's repository with it."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CSBS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CSBS_DATABASE_URL", db_url)
    monkeypatch.setenv("CSBS_CHUNK_SIZE", str(64 * 1024))
    runner = CliRunner()
    assert runner.invoke(csbs_app, ["db", "upgrade"]).exit_code == 0
    disk = data_dir / "disks" / "a.img"
    disk.write_bytes(write_image(tmp_path / "disk.img", 8 * SMALL_CHUNK).read_bytes())
    added = runner.invoke(
        csbs_app, ["server", "add", "--project", "admin", "--name", "web1", "--disk", str(disk)]
    )
    assert added.exit_code == 0, added.output
    monkeypatch.delenv("CSBS_CHUNK_SIZE")
    other = load_settings()
    assert other.chunk_size == RepositorySettings().chunk_size != 64 * 1024
    runtime = composition.build(other)
    worker = composition.make_worker(runtime, concurrency=1)
    worker.start()
    try:
        created = runner.invoke(csbs_app, ["backup", "create", added.output.strip(), "--wait"])
        assert created.exit_code == 0, created.output
        project_id = runtime.services.identity.resolve_project("admin").id
        record = runtime.services.repository.index.get_project(project_id)
        assert record is not None and record.chunk_size == 64 * 1024
    finally:
        worker.stop(grace=5)
        runtime.close()
    shown = runner.invoke(csbs_app, ["repo", "chunk-size"])
    assert shown.exit_code == 0 and "65536 bytes" in shown.output, shown.output
    # An operator changes it for projects created from now on.
    changed = runner.invoke(csbs_app, ["repo", "chunk-size", "--set"])
    assert changed.exit_code == 0 and f"{other.chunk_size} bytes" in changed.output


def test_repo_check_takes_a_project_name_or_id(tmp_path: pathlib.Path, db_url: str) -> None:
    data_dir = tmp_path / "data"
    settings = load_settings(data_dir=data_dir, database_url=db_url)
    runtime = composition.build(settings)
    try:
        composition.prepare(runtime)
        pid = runtime.services.identity.resolve_project("admin").id
        runtime.services.repository.open_project(pid)  # its repository
    finally:
        runtime.close()
    base = ["--data-dir", str(data_dir), "--database-url", db_url]
    for project in ("admin", pid):
        checked = CliRunner().invoke(csbs_app, ["repo", "check", "--project", project, *base])
        assert checked.exit_code == 0, checked.output
        assert checked.output.startswith("1 projects, 0 chunks: 0 missing"), checked.output
