"""`DriverStatement`: a prebuilt statement on the driver's cursor, as SQLAlchemy would run it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from csbs.db.driver import DriverStatement
from csbs.db.engine import Database, create_engine
from csbs.domain import errors
from csbs.sql.types import UTCDateTime

_metadata = sa.MetaData()
_things = sa.Table(
    "driver_things",
    _metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("doc", sa.JSON(), nullable=False),
    sa.Column("flag", sa.Boolean(), nullable=False),
)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    engine = create_engine(pg_url, pool_size=1)
    _metadata.create_all(engine)
    yield Database(engine)
    engine.dispose()


def _insert_returning() -> sa.Select[tuple[str, dt.datetime, bool, bool]]:
    added = (
        sa.insert(_things)
        .from_select(
            ["id", "at", "doc", "flag"],
            sa.select(
                sa.bindparam("t_id", type_=sa.String()),
                sa.bindparam("t_at", type_=UTCDateTime()),
                sa.literal({"k": [1, "two"]}, sa.JSON()),
                sa.literal(True, sa.Boolean()),
            ),
        )
        .returning(_things.c.id)
        .cte("added")
    )
    return sa.select(
        _things.c.id, _things.c.at, _things.c.flag, sa.literal(False).label("extra")
    ).where(_things.c.id.in_(sa.select(added.c.id)) | (_things.c.id == sa.bindparam("t_other")))


def test_rows_and_writes_match_sqlalchemys(db: Database) -> None:
    statement = DriverStatement(db, _insert_returning())
    at = dt.datetime(2026, 12, 5, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    rows = statement.rows({"t_id": "a", "t_at": at, "t_other": "none"})
    assert rows == []  # the row the CTE adds is not visible to the statement itself
    with db.read() as s:
        stored = s.execute(sa.select(_things)).one()
    # The bind processors ran: the aware time is stored as naive UTC, the JSON as JSON.
    assert stored.at == dt.datetime(2026, 12, 5, 21, 0, tzinfo=dt.UTC)
    assert stored.doc == {"k": [1, "two"]} and stored.flag is True
    again = statement.rows({"t_id": "b", "t_at": at, "t_other": "a"})
    with db.statement() as conn:
        expected = conn.execute(
            _insert_returning(), {"t_id": "c", "t_at": at, "t_other": "a"}
        ).all()
    assert [(r.id, r.flag, r.extra) for r in again] == [("a", True, False)]
    assert [(r.id, r.flag, r.extra) for r in expected] == [("a", True, False)]
    # Named fields, in the statement's order; the time as the driver gives it.
    assert again[0]._fields == ("id", "at", "flag", "extra")
    # Prepared on the connection from its first run (the pool has one connection here).
    with db.statement() as conn:
        prepared = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%driver_things%'"
            )
        ).scalar_one()
    assert prepared == 1


def test_errors_are_translated_and_a_broken_connection_is_not_reused(
    db: Database, pg_url: str
) -> None:
    statement = DriverStatement(db, _insert_returning())
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(errors.InvalidInput):  # PostgreSQL refuses NUL in text
        statement.rows({"t_id": "nul\x00", "t_at": now, "t_other": "x"})
    statement.rows({"t_id": "ok", "t_at": now, "t_other": "x"})
    with db.statement() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    killer = create_engine(pg_url)
    with killer.connect() as k:
        k.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    killer.dispose()
    with pytest.raises(errors.ServiceUnavailable):
        statement.rows({"t_id": "lost", "t_at": now, "t_other": "x"})
    # The pool's only connection was invalidated: the next call gets a new one.
    assert [r.id for r in statement.rows({"t_id": "next", "t_at": now, "t_other": "ok"})] == ["ok"]


def test_sqlite_is_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(ValueError, match="PostgreSQL"):
            DriverStatement(Database(engine), _insert_returning())
    finally:
        engine.dispose()


def test_the_private_sqlalchemy_attribute_it_relies_on_is_there() -> None:
    """`DriverStatement` reads `SQLCompiler._bind_processors` (private to SQLAlchemy): an
    upgrade that renames or reshapes it fails here, not in production."""
    from sqlalchemy.dialects import postgresql

    compiled = (
        sa.select(_things.c.id)
        .where(_things.c.at == sa.bindparam("t_at", type_=UTCDateTime()))
        .compile(dialect=postgresql.psycopg.dialect())  # type: ignore[attr-defined]
    )
    processors = compiled._bind_processors
    assert isinstance(processors, dict)
    assert callable(processors["t_at"])  # UTCDateTime's processor, by parameter name
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert processors["t_at"](now) == UTCDateTime().process_bind_param(now, None)
