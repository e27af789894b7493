"""What differs between SQLite and PostgreSQL, told from the engine in one place.

The same code runs on both engines. Where a statement or a connection must differ (the
dialect's `INSERT ... ON CONFLICT`, row locks, autocommit for one-statement writes), callers
ask here instead of comparing dialect names themselves.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

#: An INSERT of the engine's dialect: it takes `on_conflict_do_nothing` and
#: `on_conflict_do_update`.
Insert = postgresql.Insert | sqlite.Insert


def is_postgres(bind: sa.Engine | sa.Connection) -> bool:
    """Tell whether `bind` talks to PostgreSQL."""
    return bind.dialect.name == "postgresql"


def is_sqlite(bind: sa.Engine | sa.Connection) -> bool:
    """Tell whether `bind` talks to SQLite."""
    return bind.dialect.name == "sqlite"


def insert(bind: sa.Engine | sa.Connection) -> Callable[[sa.Table], Insert]:
    """The `insert` of `bind`'s dialect, whose statements have ON CONFLICT clauses."""
    return postgresql.insert if is_postgres(bind) else sqlite.insert


def autocommit(engine: sa.Engine) -> sa.Engine:
    """`engine` with every statement a transaction of its own."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def one_statement(engine: sa.Engine) -> sa.Engine:
    """`engine` as a write that is one statement should use it: in autocommit mode on
    PostgreSQL (one round trip instead of three: no BEGIN, no COMMIT); on SQLite the engine
    itself, a transaction as any other (it takes the writers' lock)."""
    return autocommit(engine) if is_postgres(engine) else engine
