"""`csbs doctor`: one line per problem of a deployment, exit 1; an OK line otherwise; and
it creates nothing — no data directory, database, schema, key file or repository."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from csbs import app as composition
from csbs import migrations
from csbs.app import doctor
from csbs.blobstore import LocalStore
from csbs.cli import app as csbs_app
from csbs.config import Settings
from csbs.db.engine import create_engine
from csbs.domain.clock import FrozenClock, SystemClock
from csbs.queue.registry import Registration, WorkerRegistry
from csbs.repository.deployment import MARKER
from csbs.repository.keys import generate_data_key
from csbs.services.inventory import DiskSpec
from tests.support.processes import free_port
from tests.support.runtime import ADMIN_PASSWORD, FAST_HASHER


def _bare(data_dir: Path, db_url: str) -> Settings:
    """This machine's settings for a database no process started on: a key of its own
    and an existing (empty) repository directory, so only the database is in question."""
    (data_dir / "repository").mkdir(parents=True)
    return _settings(data_dir, db_url, master_key=generate_data_key().hex())


def _settings(data_dir: Path, db_url: str, **extra: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=db_url,
        admin_password=ADMIN_PASSWORD,  # type: ignore[arg-type]
        embedded_workers=False,
        **extra,  # type: ignore[arg-type]
    )


def _start(data_dir: Path, db_url: str) -> Path:
    """A deployment that started once, with a live worker on host h1: schema, key,
    repository."""
    runtime = composition.build(_settings(data_dir, db_url), password_hasher=FAST_HASHER)
    try:
        composition.prepare(runtime)
    finally:
        runtime.close()
    _worker(db_url, "h1")
    return data_dir


def _worker(db_url: str, host: str, *, silent_for: float = 0.0) -> None:
    """What a worker on `host` writes when it starts; its heartbeat `silent_for` seconds
    old."""
    now = SystemClock().now() - dt.timedelta(seconds=silent_for)
    engine = create_engine(db_url)
    try:
        WorkerRegistry(engine, FrozenClock(now), stale_seconds=60).register(
            Registration(f"{host}:1:{uuid.uuid4().hex[:8]}", host, "test", 1, slots=2)
        )
    finally:
        engine.dispose()


def _server(data_dir: Path, db_url: str, name: str, host: str | None) -> str:
    """`csbs server add` on the server's host (its disks open there, no worker needed)."""
    settings = _settings(data_dir, db_url, worker_host=host or "h1")
    runtime = composition.build(settings, password_hasher=FAST_HASHER)
    try:
        disk = data_dir / "disks" / f"{name}.img"
        disk.write_bytes(bytes(4096))
        project = runtime.services.identity.resolve_project("admin").id
        return runtime.services.inventory.add_server(
            project, name, [DiskSpec(str(disk))], host=host
        ).id
    finally:
        runtime.close()


@pytest.fixture
def deployment(tmp_path: Path, db_url: str) -> Path:
    return _start(tmp_path / "a", db_url)


def _tree(root: Path) -> set[str]:
    """Every path beneath `root` (what a check must not add to)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


#: The line of a PostgreSQL server whose autovacuum is off (the test server's may be: it
#: is the machine's setting, checked on its own below), left out of the other tests.
AUTOVACUUM_OFF = "postgresql: autovacuum is off"


def _server_autovacuum(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW autovacuum")).scalar_one())
    finally:
        engine.dispose()


def _problems(settings: Settings) -> list[str]:
    return [p for p in doctor.diagnose(settings).problems if not p.startswith(AUTOVACUUM_OFF)]


def _only(settings: Settings, prefix: str, *fragments: str) -> str:
    problems = _problems(settings)
    assert len(problems) == 1, problems
    (line,) = problems
    assert line.startswith(prefix), line
    for fragment in fragments:
        assert fragment in line, line
    assert "\n" not in line
    return line


def test_a_healthy_deployment_is_one_ok_line_and_exit_0(deployment: Path, db_url: str) -> None:
    before = _tree(deployment)
    result = CliRunner().invoke(
        csbs_app, ["doctor", "--data-dir", str(deployment), "--database-url", db_url]
    )
    lines = result.stdout.splitlines()
    if db_url.startswith("postgresql") and _server_autovacuum(db_url) != "on":
        # this PostgreSQL server's own setting: the one problem, and nothing else
        assert result.exit_code == 1, result.output
        assert len(lines) == 1 and lines[0].startswith(AUTOVACUUM_OFF), lines
        assert "autovacuum = on" in lines[0]
        return
    assert result.exit_code == 0, result.output
    assert len(lines) == 1 and lines[0].startswith("ok: "), lines
    assert "schema at " in lines[0] and "master key " in lines[0], lines[0]
    assert "workers alive on h1 (1)" in lines[0]
    assert f"repository file://{deployment / 'repository'}" in lines[0]
    if db_url.startswith("postgresql"):
        assert "autovacuum on" in lines[0]
    assert _tree(deployment) == before


def test_problems_are_printed_one_a_line_with_exit_1(
    deployment: Path, db_url: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        csbs_app,
        ["doctor", "--data-dir", str(tmp_path / "elsewhere"), "--database-url", db_url],
    )
    assert result.exit_code == 1
    lines = [x for x in result.stdout.splitlines() if not x.startswith(AUTOVACUUM_OFF)]
    # this machine's data directory has neither the key nor the repository
    assert [line.split(":", 1)[0] for line in lines] == ["master key", "repository_url"], lines
    assert not (tmp_path / "elsewhere").exists()


def test_no_database_file_is_reported_and_not_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "nothing"
    problems = _problems(_settings(data_dir, f"sqlite:///{data_dir / 'csbs.db'}"))
    assert problems[0].startswith("database: sqlite:///"), problems
    assert "no such file" in problems[0]
    assert not data_dir.exists()


def test_an_unreachable_postgresql_is_reported_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://csbs:s3cret@127.0.0.1:{free_port()}/csbs"
    problems = _problems(_settings(tmp_path / "a", url, db_connect_timeout_seconds=1))
    assert problems[0].startswith("database: cannot connect to postgresql"), problems
    assert "s3cret" not in " ".join(problems)
    assert "***" in problems[0]


def test_an_empty_database_is_not_migrated_by_the_check(tmp_path: Path, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        sa.create_engine(db_url).connect().close()  # an empty SQLite file
    line = _only(
        _bare(tmp_path / "a", db_url),
        "database: no csbs schema",
        "csbs db upgrade",
    )
    assert line
    engine = create_engine(db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_an_older_schema_names_both_revisions_and_stays_as_it_is(
    tmp_path: Path, db_url: str
) -> None:
    engine = create_engine(db_url)
    try:
        migrations.upgrade(engine, "0001")
        _only(
            _bare(tmp_path / "a", db_url),
            "database: at revision 0001, this csbs needs ",
            "csbs db upgrade",
        )
        assert migrations.current_revision(engine) == "0001"
    finally:
        engine.dispose()


def test_a_missing_key_file_is_reported_and_not_created(
    deployment: Path, db_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "keys" / "master.key"
    _only(
        _settings(deployment, db_url, master_key_file=missing),
        "master key: ",
        str(missing),
        "does not exist",
        "the database records fingerprint ",
    )
    assert not missing.parent.exists()


def test_another_key_is_reported_with_both_fingerprints(deployment: Path, db_url: str) -> None:
    _only(
        _settings(deployment, db_url, master_key=generate_data_key().hex()),
        "master key: the master_key setting (CSBS_MASTER_KEY) is not the deployment's key",
        "the database records ",
    )


def test_a_key_file_that_holds_no_key_is_reported(
    deployment: Path, db_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    _only(_settings(deployment, db_url, master_key_file=bad), "master key: ", "holds no key")


def test_a_repository_url_that_does_not_exist_is_reported_and_not_created(
    deployment: Path, db_url: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    _only(
        _settings(deployment, db_url, repository_url=f"file://{elsewhere}"),
        f"repository_url: file://{elsewhere} does not exist",
        f"the database records file://{deployment / 'repository'}",
    )
    assert not elsewhere.exists()


def test_a_store_without_the_marker_or_with_another_is_reported_and_left_alone(
    deployment: Path, db_url: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    settings = _settings(deployment, db_url, repository_url=f"file://{empty}")
    _only(settings, f"repository_url: file://{empty} is not the deployment's", f"no {MARKER}")
    assert _tree(empty) == set()
    LocalStore(empty).put(MARKER, b"f" * 32)
    _only(settings, "repository_url: ", "is another deployment's repository", "f" * 32)


def test_an_unreadable_store_is_reported(deployment: Path, db_url: str) -> None:
    if os.geteuid() == 0:
        # root reads through any mode: a bad S3 URL instead
        settings = _settings(deployment, db_url, repository_url="s3://b?nonsense=1")
        _only(settings, "repository_url: ", "unknown s3 URL parameters")
        return
    (deployment / "repository").chmod(0)
    try:
        _only(_settings(deployment, db_url), "repository_url: cannot read ")
    finally:
        (deployment / "repository").chmod(0o700)


def test_a_database_that_records_no_deployment_is_reported(tmp_path: Path, db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        migrations.upgrade(engine)  # migrated, but no process has started on it
    finally:
        engine.dispose()
    _worker(db_url, "h1")
    _only(
        _bare(tmp_path / "a", db_url),
        "deployment: the database records no master key and repository yet",
    )


def test_autovacuum_disabled_on_a_table_is_reported(tmp_path: Path, pg_url: str) -> None:
    data_dir = _start(tmp_path / "a", pg_url)
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE tasks SET (autovacuum_enabled = false)"))
        _only(
            _settings(data_dir, pg_url),
            "postgresql: autovacuum is disabled on table tasks",
            "RESET (autovacuum_enabled)",
        )
    finally:
        engine.dispose()


def test_no_live_worker_at_all_is_reported(tmp_path: Path, db_url: str) -> None:
    runtime = composition.build(_settings(tmp_path / "a", db_url), password_hasher=FAST_HASHER)
    try:
        composition.prepare(runtime)
    finally:
        runtime.close()
    _only(
        _settings(tmp_path / "a", db_url),
        "workers: no live worker (none sent a heartbeat within worker_stale_seconds = 60)",
    )


def test_a_host_whose_workers_stopped_beating_is_reported(deployment: Path, db_url: str) -> None:
    _worker(db_url, "h2", silent_for=300)
    line = _only(_settings(deployment, db_url), "workers: host h2 has no live worker")
    assert "the last heartbeat there was 30" in line  # 300 s and the test's own seconds
    # the same worker is alive by a longer staleness setting
    assert _problems(_settings(deployment, db_url, worker_stale_seconds=600)) == []


def test_servers_on_a_host_without_a_live_worker_are_reported_per_host(
    deployment: Path, db_url: str
) -> None:
    served = _server(deployment, db_url, "web1", "h1")
    anywhere = _server(deployment, db_url, "web2", None)
    stranded = [_server(deployment, db_url, f"db{i}", "h3") for i in range(7)]
    line = _only(_settings(deployment, db_url), "servers: no live worker on host h3 for ")
    assert f"db0 ({stranded[0]})" in line and "and 2 more" in line
    assert served not in line and anywhere not in line
    assert "task_start_deadline_seconds" in line
    _worker(db_url, "h3")
    assert _problems(_settings(deployment, db_url)) == []
