"""Engine and transaction scopes for SQLite (embedded default) and PostgreSQL (psycopg 3).

The same code runs on both. SQLite gets WAL, foreign keys and a busy timeout; transactions
that write begin with `BEGIN IMMEDIATE` so two writers queue on the database lock instead of
failing on a lock upgrade. Connection failures leave this module as
`csbs.domain.errors.ServiceUnavailable`, which the HTTP layer answers with 503.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc, orm
from sqlalchemy.engine import make_url

from csbs.domain import errors
from csbs.sql import dialect, reads

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: A pooled PostgreSQL connection idle this long is pinged before use.
PING_IDLE_SECONDS = 1.0


def normalise_url(url: str) -> str:
    """Map plain `postgresql://` URLs onto the psycopg 3 driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def create_engine(
    url: str, *, connect_timeout: int = 3, pool_size: int = 10, max_overflow: int = 20
) -> sa.Engine:
    """Create an engine for `url` with the project's connection settings.

    Args:
        url: `sqlite:///path` or `postgresql://...`.
        connect_timeout: seconds to wait for a PostgreSQL connection before giving up.
        pool_size: connections kept open to PostgreSQL.
        max_overflow: connections opened beyond `pool_size` at busy moments, closed when
            returned; a process holds at most `pool_size + max_overflow` from its pool (a
            worker's LISTEN connection is one more, outside the pool).
    """
    url = normalise_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        _configure_sqlite(engine)
        return engine
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=connect_timeout,
        connect_args={"connect_timeout": connect_timeout},
    )
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: sa.Engine, idle_seconds: float = PING_IDLE_SECONDS) -> None:
    """Check a pooled connection on checkout only if it sat idle for `idle_seconds`.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: one more round trip for every
    transaction, which under load is a good share of a short one (a DELETE call, a task
    claim). A connection used a moment ago is alive, or its failure is a fault the caller
    retries (the workers) or answers with 503 (the API); a disconnect error also drops
    every pooled connection. Connections that sat idle, e.g. through a database restart,
    are pinged and replaced when dead, as `pool_pre_ping` would.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["csbs_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("csbs_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as e:
            if dialect.is_disconnect(e, dbapi_conn, None):
                raise exc.DisconnectionError(str(e)) from e  # the pool reconnects
            raise


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    # Writers of this process queue on a Python lock before asking SQLite for its write
    # lock: SQLite's busy handler sleeps in growing steps (up to 100 ms) and lets waiting
    # writers starve, while a lock hands over at once. Other processes still meet the
    # busy timeout.
    writer_lock = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("csbs_write", True):
            writer_lock.acquire()
            conn.info["csbs_writer"] = True
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                del conn.info["csbs_writer"]
                writer_lock.release()
                raise
        else:
            conn.exec_driver_sql("BEGIN DEFERRED")

    def _release(conn: sa.Connection) -> None:
        if conn.info.pop("csbs_writer", False):
            writer_lock.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn "the database is not reachable" into ServiceUnavailable and values it cannot
    take into InvalidInput; let the rest through."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError) as e:
        if isinstance(e, exc.OperationalError) and _is_sqlite_lock(e):
            raise errors.ServiceUnavailable("The metadata database is busy; retry.") from e
        raise errors.ServiceUnavailable("The metadata database is unavailable.") from e
    except exc.TimeoutError as e:
        raise errors.ServiceUnavailable("The metadata database is overloaded.") from e
    except exc.DataError as e:
        # A value the database cannot hold (a NUL character, NaN in JSON, a number out of
        # range): the caller's input, never an internal fault.
        raise errors.InvalidInput(
            "a value in the request cannot be stored or compared (e.g. a NUL character, "
            "NaN or a number out of range)"
        ) from e


def _is_sqlite_lock(e: exc.OperationalError) -> bool:
    return "database is locked" in str(e.orig)


def joined_session(conn: sa.Connection) -> orm.Session:
    """A session inside a transaction someone else (the task queue) owns and commits."""
    return orm.Session(bind=conn)


class Database:
    """The engine plus its session factory; the handle every query module is given."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._write = orm.sessionmaker(bind=engine, expire_on_commit=False)
        self._read = orm.sessionmaker(bind=reads.reader(engine), expire_on_commit=False)
        self._autocommit = dialect.autocommit(engine)

    @property
    def is_sqlite(self) -> bool:
        return dialect.is_sqlite(self.engine)

    @contextlib.contextmanager
    def write(self) -> Iterator[orm.Session]:
        """A transaction that may write; committed on success, rolled back on error."""
        with translate_errors(), self._write() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[orm.Session]:
        """A read-only scope: a transaction that never blocks on SQLite's writer lock; on
        PostgreSQL, statements in autocommit mode (`csbs.sql.reads`)."""
        with translate_errors(), self._read() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def statement(self) -> Iterator[sa.Connection]:
        """A connection on which every statement is a transaction of its own (PostgreSQL):
        a write done in one statement then costs one round trip, not three."""
        with translate_errors(), self._autocommit.connect() as conn:
            yield conn

    def ping(self) -> None:
        """Raise ServiceUnavailable unless the database answers `SELECT 1`."""
        with self.read() as session:
            session.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
