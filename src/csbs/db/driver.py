"""A prebuilt statement run on the driver's own connection, for the hottest call paths.

SQLAlchemy's execution of a cached, compiled statement still builds an execution context and
a result object per call, and reads the cursor's description, which psycopg rebuilds on
every access. For the one statement that accepts a DELETE call that is about half of the
call's database CPU in the API process (0.32 against 0.18 ms per call, measured in process
on PostgreSQL). A `DriverStatement` compiles its statement once for the engine's dialect and
then runs it with the driver's cursor: the same SQL and bound values (the types' bind
processors are applied as SQLAlchemy would), rows as named tuples whose fields are the
statement's selected columns. The statement is prepared on each connection at its first
run, not after psycopg's default five: a statement worth this is run again and again, and
the first runs on each pooled connection were the slowest DELETE calls of the benchmark.

Errors are SQLAlchemy's again before they leave (`DBAPIError.instance`), so
`engine.translate_errors` answers them as for any statement. A connection that broke is not
used again: the pool's reset of it on return fails, and the pool drops it
(`tests/db/test_driver.py`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import exc

from csbs.db.engine import Database, translate_errors


class DriverStatement:
    """One prebuilt statement, each run a transaction of its own (autocommit); PostgreSQL
    (psycopg) only."""

    def __init__(self, db: Database, statement: sa.Select[Any]) -> None:
        if db.engine.dialect.name != "postgresql":
            raise ValueError("a DriverStatement runs on PostgreSQL (psycopg) only")
        self._db = db
        compiled = statement.compile(dialect=db.engine.dialect)
        self._sql = compiled.string
        self._compiled = compiled
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for name, process in compiled._bind_processors.items():
            if not callable(process):  # tuple-typed parameters have one per element
                raise TypeError(f"parameter {name!r}: only scalar types are supported")
            self._processors[name] = process
        row = collections.namedtuple("Row", [str(c.key) for c in statement.selected_columns])  # type: ignore[misc]
        self._make: Callable[[Any], Any] = row._make

    def rows(self, values: dict[str, Any]) -> list[NamedTuple]:
        """Run the statement with `values` for its named parameters; every row it returns."""
        params = self._compiled.construct_params(values)
        for name, process in self._processors.items():
            params[name] = process(params[name])
        with translate_errors(), self._db.statement() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            try:
                with driver.cursor() as cursor:
                    cursor.execute(self._sql, params, prepare=True)
                    fetched = cursor.fetchall()
            except conn.dialect.loaded_dbapi.Error as e:
                raise exc.DBAPIError.instance(
                    self._sql,
                    params,
                    e,
                    conn.dialect.loaded_dbapi.Error,
                    dialect=conn.dialect,
                    ismulti=False,
                ) from e
        make = self._make
        return [make(row) for row in fetched]
