"""One deployment identity (decision 0019): the database records the repository and the
master key's fingerprint at the first start, and a process configured otherwise refuses to
start, naming the setting, before it writes anything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from csbs import app as composition
from csbs import migrations
from csbs.blobstore import LocalStore
from csbs.cli import app as csbs_app
from csbs.config import Settings
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.domain.errors import DeploymentMismatch
from csbs.queue import EnqueueRequest, TaskStatus
from csbs.repository import Repository, RepositorySettings, load_or_create_master_key
from csbs.repository.deployment import (
    KEY_FINGERPRINT,
    MARKER,
    REPOSITORY_ID,
    REPOSITORY_URL,
    key_fingerprint,
)
from csbs.repository.keys import generate_data_key
from tests.support.processes import clean_env, csbs_command
from tests.support.runtime import ADMIN_PASSWORD, FAST_HASHER


def _settings(data_dir: Path, db_url: str, **extra: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=db_url,
        admin_password=ADMIN_PASSWORD,  # type: ignore[arg-type]
        embedded_workers=False,
        **extra,  # type: ignore[arg-type]
    )


def _first_start(tmp_path: Path, db_url: str) -> composition.Runtime:
    runtime = composition.build(_settings(tmp_path / "a", db_url), password_hasher=FAST_HASHER)
    composition.prepare(runtime)
    return runtime


def _blobs(root: Path) -> set[str]:
    return set(LocalStore(root).list("")) if root.exists() else set()


def _run(command: str, data_dir: Path, db_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`csbs <command>` as its own process; it must exit by itself (a refusal)."""
    return subprocess.run(
        [*csbs_command(), command, "--data-dir", str(data_dir), "--database-url", db_url],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_refused(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # one readable line, no traceback
    assert lines[0].startswith("error: CSBS.9012: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_the_first_start_records_the_repository_and_the_key_fingerprint(
    tmp_path: Path, db_url: str
) -> None:
    runtime = _first_start(tmp_path, db_url)
    try:
        recorded = runtime.services.repository.index.deployment_values()
    finally:
        runtime.close()
    key = (tmp_path / "a" / "master.key").read_text().strip()
    assert recorded[KEY_FINGERPRINT] == key_fingerprint(bytes.fromhex(key))
    assert key not in recorded.values()  # a fingerprint, never the key
    assert recorded[REPOSITORY_URL] == f"file://{tmp_path / 'a' / 'repository'}"
    marker = LocalStore(tmp_path / "a" / "repository").get(MARKER).decode()
    assert marker == recorded[REPOSITORY_ID]


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_a_process_without_the_key_file_refuses_and_creates_none(
    tmp_path: Path, db_url: str, command: str
) -> None:
    runtime = _first_start(tmp_path, db_url)
    task = runtime.services.tasks.enqueue_one(EnqueueRequest("p1", "delete"))
    repository = tmp_path / "a" / "repository"
    before = _blobs(repository)
    try:
        done = _run(command, tmp_path / "b", db_url, CSBS_REPOSITORY_URL=f"file://{repository}")
        _assert_refused(done, "master key", str(tmp_path / "b" / "master.key"), "does not exist")
        assert not (tmp_path / "b" / "master.key").exists()
        found = runtime.services.tasks.get(task.id)
        assert found is not None and found.status is TaskStatus.WAITING and found.attempts == 0
        assert _blobs(repository) == before
    finally:
        runtime.close()


def test_a_worker_with_another_key_refuses_and_claims_nothing(tmp_path: Path, db_url: str) -> None:
    runtime = _first_start(tmp_path, db_url)
    task = runtime.services.tasks.enqueue_one(EnqueueRequest("p1", "delete"))
    repository = tmp_path / "a" / "repository"
    before = _blobs(repository)
    other = tmp_path / "b" / "master.key"
    other.parent.mkdir()
    other.write_text(generate_data_key().hex() + "\n")
    other.chmod(0o600)
    try:
        done = _run("worker", tmp_path / "b", db_url, CSBS_REPOSITORY_URL=f"file://{repository}")
        _assert_refused(done, "master key", str(other), "not the deployment's key")
        found = runtime.services.tasks.get(task.id)
        assert found is not None and found.status is TaskStatus.WAITING and found.attempts == 0
        assert _blobs(repository) == before
        recorded = runtime.services.repository.index.deployment_values()
        assert recorded[KEY_FINGERPRINT] == key_fingerprint(
            bytes.fromhex((tmp_path / "a" / "master.key").read_text())
        )
    finally:
        runtime.close()


def test_serve_pointed_at_another_repository_refuses(tmp_path: Path, db_url: str) -> None:
    """The default repository of another data directory: the worker of the issue that wrote
    into its own local directory."""
    runtime = _first_start(tmp_path, db_url)
    runtime.close()
    key_file = tmp_path / "a" / "master.key"
    done = _run("serve", tmp_path / "b", db_url, CSBS_MASTER_KEY_FILE=str(key_file))
    _assert_refused(
        done, "repository_url", f"file://{tmp_path / 'b' / 'repository'}", "is not the deployment"
    )
    assert _blobs(tmp_path / "b" / "repository") == set()


def test_another_store_at_the_same_url_is_refused_and_the_store_that_moved_is_not(
    tmp_path: Path, db_url: str
) -> None:
    runtime = _first_start(tmp_path, db_url)
    runtime.close()
    repository = tmp_path / "a" / "repository"
    moved = tmp_path / "moved"
    shutil.move(repository, moved)
    repository.mkdir()  # an empty directory where the repository was

    again = composition.build(_settings(tmp_path / "a", db_url))
    try:
        migrations.upgrade(again.services.db.engine)
        with pytest.raises(DeploymentMismatch, match=f"repository_url: .*no {MARKER}"):
            composition.check_deployment(again)
    finally:
        again.close()
    assert _blobs(repository) == set()

    # Another deployment's repository there.
    LocalStore(repository).put(MARKER, b"0" * 32)
    again = composition.build(_settings(tmp_path / "a", db_url))
    try:
        with pytest.raises(DeploymentMismatch, match="another deployment's repository"):
            composition.check_deployment(again)
    finally:
        again.close()

    # The deployment's own store reached by another URL is its repository.
    moved_settings = _settings(tmp_path / "a", db_url, repository_url=f"file://{moved}")
    again = composition.build(moved_settings)
    try:
        composition.check_deployment(again)
    finally:
        again.close()


def test_the_repo_commands_refuse_a_store_that_is_not_the_deployments(
    tmp_path: Path, db_url: str
) -> None:
    runtime = _first_start(tmp_path, db_url)
    runtime.close()
    result = CliRunner().invoke(
        csbs_app,
        [
            "repo", "check", "--data-dir", str(tmp_path / "a"), "--database-url", db_url,
            "--store", f"file://{tmp_path / 'elsewhere'}",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "CSBS.9012: repository_url" in result.output
    assert _blobs(tmp_path / "elsewhere") == set()


def _older_deployment(tmp_path: Path, db_url: str) -> tuple[Path, bytes]:
    """A database and repository from before the identity was recorded: one project."""
    data_dir = tmp_path / "a"
    engine = create_engine(db_url)
    migrations.upgrade(engine)
    key = load_or_create_master_key(data_dir / "master.key")
    repo = Repository(
        engine, LocalStore(data_dir / "repository"), SystemClock(), key, RepositorySettings()
    )
    repo.open_project("p1")
    engine.dispose()
    return data_dir, key


def test_an_older_database_adopts_the_identity_at_its_next_start(
    tmp_path: Path, db_url: str
) -> None:
    data_dir, key = _older_deployment(tmp_path, db_url)
    runtime = composition.build(_settings(data_dir, db_url), password_hasher=FAST_HASHER)
    try:
        index = runtime.services.repository.index
        assert not {KEY_FINGERPRINT, REPOSITORY_ID} & set(index.deployment_values())
        composition.prepare(runtime)
        recorded = index.deployment_values()
        assert recorded[KEY_FINGERPRINT] == key_fingerprint(key)
        marker = LocalStore(data_dir / "repository").get(MARKER).decode()
        assert recorded[REPOSITORY_ID] == marker
        runtime.services.repository.open_project("p1")  # the adopted key opens it
    finally:
        runtime.close()


def test_an_older_database_refuses_to_adopt_a_key_that_does_not_open_its_projects(
    tmp_path: Path, db_url: str
) -> None:
    data_dir, _key = _older_deployment(tmp_path, db_url)
    other = tmp_path / "other.key"
    other.write_text(generate_data_key().hex())
    for settings in (
        _settings(data_dir, db_url, master_key_file=other),
        _settings(data_dir, db_url, master_key_file=tmp_path / "missing.key"),
    ):
        runtime = composition.build(settings)
        try:
            with pytest.raises(DeploymentMismatch, match="master key: "):
                composition.check_deployment(runtime)
            assert KEY_FINGERPRINT not in runtime.services.repository.index.deployment_values()
        finally:
            runtime.close()
    assert not (tmp_path / "missing.key").exists()
