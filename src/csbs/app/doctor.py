"""`csbs doctor`: a deployment checked from any machine, one line per problem.

It reads what every process of the deployment needs — the metadata database, its schema's
revision, the repository and master key the database records (decision 0019), the
repository's marker, PostgreSQL's autovacuum — with the settings of the machine it runs on,
and creates nothing: no data directory, no SQLite file, no key file, no repository
directory or marker, no migration (unlike `build`, `prepare` and `check_deployment`,
which a process that starts uses). Each check that cannot run because an earlier one
failed (no database: nothing recorded to compare with) is left out, not reported twice.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from csbs.blobstore import errors as blob_errors
from csbs.blobstore.registry import open_store
from csbs.config import Settings
from csbs.db.engine import Database, create_engine
from csbs.db.queries import inventory as inventory_queries
from csbs.domain.clock import SystemClock
from csbs.migrations.runner import newest_revision
from csbs.queue.registry import WorkerRegistry
from csbs.repository import errors as repository_errors
from csbs.repository.deployment import (
    KEY_FINGERPRINT,
    MARKER,
    REPOSITORY_ID,
    REPOSITORY_URL,
    key_fingerprint,
    store_location,
)
from csbs.repository.index import ChunkIndex
from csbs.repository.keys import parse_master_key, read_master_key

#: A check reads the deployment and adds problems and facts to the diagnosis.
Check = Callable[["Examined", "Diagnosis"], None]


@dataclasses.dataclass
class Diagnosis:
    """What `csbs doctor` prints: one line per problem, or the facts of a healthy one."""

    problems: list[str] = dataclasses.field(default_factory=list)
    facts: list[str] = dataclasses.field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return "ok: " + "; ".join(self.facts)


@dataclasses.dataclass
class Examined:
    """What the checks share: the settings, the database (None when unreachable) and what
    it records of the deployment."""

    settings: Settings
    engine: sa.Engine | None = None
    #: the schema is at the revision this csbs needs
    migrated: bool = False
    #: `repo_deployment`'s values (empty when none are recorded or there is no schema)
    recorded: dict[str, str] = dataclasses.field(default_factory=dict)


def diagnose(settings: Settings, extra: tuple[Check, ...] = ()) -> Diagnosis:
    """Run every check against the deployment `settings` name; create nothing."""
    diagnosis = Diagnosis()
    examined = Examined(settings)
    try:
        examined.engine = _connect(settings, diagnosis)
        if examined.engine is not None:
            _check_schema(examined, diagnosis)
            _read_deployment(examined, diagnosis)
        _check_master_key(examined, diagnosis)
        _check_repository(examined, diagnosis)
        if examined.engine is not None:
            _check_postgres(examined, diagnosis)
            if examined.migrated:
                _check_workers(examined, diagnosis)
            for check in (*CHECKS, *extra):
                check(examined, diagnosis)
    finally:
        if examined.engine is not None:
            examined.engine.dispose()
    return diagnosis


#: Further checks of a reachable database.
CHECKS: list[Check] = []


def safe_url(url: str) -> str:
    """A database URL as it may be printed: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(a malformed database URL)"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect(settings: Settings, diagnosis: Diagnosis) -> sa.Engine | None:
    url = settings.effective_database_url
    shown = safe_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).exists():
            diagnosis.problems.append(
                f"database: {shown}: no such file (csbs serve or csbs db upgrade creates it; "
                "is CSBS_DATABASE_URL or CSBS_DATA_DIR set as for the other processes?)"
            )
            return None
    engine = create_engine(url, connect_timeout=settings.db_connect_timeout_seconds, pool_size=1)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        diagnosis.problems.append(f"database: cannot connect to {shown}: {_first_line(exc)}")
        return None
    diagnosis.facts.append(f"database {shown}")
    return engine


def _check_schema(examined: Examined, diagnosis: Diagnosis) -> None:
    assert examined.engine is not None
    head = newest_revision()
    try:
        with examined.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            stamped = [str(row[0]) for row in rows]
    except sa.exc.DBAPIError:
        stamped = []
    if not stamped:
        diagnosis.problems.append(
            "database: no csbs schema there: run csbs db upgrade (or start csbs serve) once"
        )
        return
    if stamped != [head]:
        diagnosis.problems.append(
            f"database: at revision {', '.join(stamped)}, this csbs needs {head}: stop the "
            "processes of the older version and run csbs db upgrade (docs/deployment.md, "
            "Upgrades)"
        )
        return
    examined.migrated = True
    diagnosis.facts.append(f"schema at {head}")


def _read_deployment(examined: Examined, diagnosis: Diagnosis) -> None:
    assert examined.engine is not None
    try:
        examined.recorded = ChunkIndex(examined.engine, SystemClock()).deployment_values()
    except sa.exc.DBAPIError as exc:
        if examined.migrated:
            diagnosis.problems.append(
                f"deployment: cannot read what the database records: {_first_line(exc)}"
            )
        return
    if examined.migrated and KEY_FINGERPRINT not in examined.recorded:
        diagnosis.problems.append(
            "deployment: the database records no master key and repository yet: start "
            "csbs serve or run csbs db upgrade once with the deployment's key and "
            "repository_url"
        )


def _key_source(settings: Settings) -> str:
    if settings.master_key is not None:
        return "the master_key setting (CSBS_MASTER_KEY)"
    return f"master_key_file {settings.effective_master_key_file}"


def _check_master_key(examined: Examined, diagnosis: Diagnosis) -> None:
    settings = examined.settings
    source = _key_source(settings)
    recorded = examined.recorded.get(KEY_FINGERPRINT)
    try:
        if settings.master_key is not None:
            key = parse_master_key(settings.master_key.get_secret_value())
        else:
            key = read_master_key(settings.effective_master_key_file)
    except FileNotFoundError:
        wanted = f" (the database records fingerprint {recorded[:16]})" if recorded else ""
        diagnosis.problems.append(
            f"master key: {source} does not exist{wanted}; copy the deployment's key file "
            "here or set CSBS_MASTER_KEY_FILE / CSBS_MASTER_KEY"
        )
        return
    except OSError as exc:
        diagnosis.problems.append(f"master key: cannot read {source}: {exc.strerror or exc}")
        return
    except repository_errors.InvalidKeyMaterial as exc:
        diagnosis.problems.append(f"master key: {source} holds no key: {exc}")
        return
    mine = key_fingerprint(key)
    if recorded is None:
        return  # nothing to compare with: said above, or no database
    if mine != recorded:
        diagnosis.problems.append(
            f"master key: {source} is not the deployment's key (fingerprint {mine[:16]}, "
            f"the database records {recorded[:16]})"
        )
        return
    diagnosis.facts.append(f"master key {mine[:16]}")


def _check_repository(examined: Examined, diagnosis: Diagnosis) -> None:
    url = examined.settings.effective_repository_url
    location = store_location(url)
    recorded_id = examined.recorded.get(REPOSITORY_ID)
    recorded_url = examined.recorded.get(REPOSITORY_URL, "?")
    deployment = f"the database records {recorded_url}, id {recorded_id}"
    if location.startswith("memory://"):
        return
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file" and not os.path.isdir(urllib.parse.unquote(parts.path)):
        # Opening a local store creates its directory: look before.
        known = f" ({deployment})" if recorded_id else ""
        diagnosis.problems.append(
            f"repository_url: {location} does not exist{known}; is CSBS_REPOSITORY_URL set "
            "as for the other processes?"
        )
        return
    try:
        store = open_store(url)
    except blob_errors.BlobStoreError as exc:
        diagnosis.problems.append(f"repository_url: {location}: {exc}")
        return
    try:
        try:
            marker: str | None = store.get(MARKER).decode("ascii", "replace").strip()
        except blob_errors.BlobNotFound:
            marker = None
    except blob_errors.BlobStoreError as exc:
        diagnosis.problems.append(f"repository_url: cannot read {location}: {_first_line(exc)}")
        return
    finally:
        store.close()
    if recorded_id is None:
        if examined.migrated:
            return  # the deployment line above says it
        if marker is not None:
            diagnosis.facts.append(f"repository {location} (marker {marker})")
        return
    if marker is None:
        diagnosis.problems.append(
            f"repository_url: {location} is not the deployment's repository (no {MARKER} "
            f"there; {deployment})"
        )
    elif marker != recorded_id:
        diagnosis.problems.append(
            f"repository_url: {location} is another deployment's repository (its {MARKER} "
            f"is {marker}; {deployment})"
        )
    else:
        diagnosis.facts.append(f"repository {location}")


#: Servers named per host in a line before "and N more".
_SERVERS_SHOWN = 5


def _check_workers(examined: Examined, diagnosis: Diagnosis) -> None:
    """Workers alive per host (their heartbeats in the registry), and the servers whose
    host has none: their backups and restores wait, then fail at the start deadline."""
    assert examined.engine is not None
    settings = examined.settings
    clock = SystemClock()
    registry = WorkerRegistry(examined.engine, clock, settings.worker_stale_seconds)
    workers = registry.list()
    live: dict[str, int] = {}
    for worker in workers:
        if worker.alive:
            live[worker.host] = live.get(worker.host, 0) + 1
    stale = f"worker_stale_seconds = {settings.worker_stale_seconds:g}"
    if not live:
        diagnosis.problems.append(
            f"workers: no live worker (none sent a heartbeat within {stale}): start csbs "
            "worker on each host, or csbs serve with embedded_workers"
        )
    now = clock.now()
    for host in sorted({w.host for w in workers} - set(live)):
        last = max(w.heartbeat_at for w in workers if w.host == host)
        diagnosis.problems.append(
            f"workers: host {host} has no live worker (the last heartbeat there was "
            f"{(now - last).total_seconds():.0f} s ago)"
        )
    with Database(examined.engine).read() as session:
        servers = inventory_queries.list_servers(session, None)
    stranded: dict[str, list[str]] = {}
    for server in servers:
        if server.host is not None and server.host not in live:
            stranded.setdefault(server.host, []).append(f"{server.name} ({server.id})")
    for host, names in sorted(stranded.items()):
        shown = ", ".join(names[:_SERVERS_SHOWN])
        more = f" and {len(names) - _SERVERS_SHOWN} more" if len(names) > _SERVERS_SHOWN else ""
        diagnosis.problems.append(
            f"servers: no live worker on host {host} for {shown}{more}: their backups and "
            "restores wait, and fail task_start_deadline_seconds after they are created"
        )
    if live:
        hosts = ", ".join(f"{host} ({count})" for host, count in sorted(live.items()))
        diagnosis.facts.append(f"workers alive on {hosts}")


def _check_postgres(examined: Examined, diagnosis: Diagnosis) -> None:
    """Autovacuum: the queue and the repository index update and delete rows all day; a
    PostgreSQL that never vacuums them bloats them and slows every claim."""
    engine = examined.engine
    assert engine is not None
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        autovacuum = conn.execute(sa.text("SHOW autovacuum")).scalar_one()
        track_counts = conn.execute(sa.text("SHOW track_counts")).scalar_one()
        max_connections = conn.execute(sa.text("SHOW max_connections")).scalar_one()
        disabled = [
            str(name)
            for (name,) in conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                    "AND c.reloptions @> ARRAY['autovacuum_enabled=false'] ORDER BY 1"
                )
            )
        ]
    if autovacuum != "on":
        diagnosis.problems.append(
            "postgresql: autovacuum is off: set autovacuum = on in postgresql.conf (the "
            "task queue and the repository index rewrite their rows all day)"
        )
    if track_counts != "on":
        diagnosis.problems.append(
            "postgresql: track_counts is off, so autovacuum never starts: set track_counts = on"
        )
    if disabled:
        diagnosis.problems.append(
            f"postgresql: autovacuum is disabled on table {', '.join(disabled)}: "
            "ALTER TABLE ... RESET (autovacuum_enabled)"
        )
    if autovacuum == "on" and track_counts == "on" and not disabled:
        diagnosis.facts.append(f"autovacuum on (max_connections {max_connections})")
