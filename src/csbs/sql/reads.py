"""Read-only connections, shared by `db`, `queue` and `repository`.

A read that changes nothing needs no transaction of its own on PostgreSQL: at READ
COMMITTED, the level csbs runs at, each statement sees its own snapshot whether or not a
transaction surrounds it, and reads here never lock (`FOR UPDATE` is only ever taken in
writing transactions). So reads run in autocommit mode and cost one round trip per
statement instead of three (BEGIN, the statement, COMMIT).

SQLite is different: a read transaction there holds one snapshot for all its statements,
and `BEGIN DEFERRED` (marked by `csbs_write=False`) keeps it off the writers' lock, so its
reads keep their transaction.
"""

from __future__ import annotations

import sqlalchemy as sa

from csbs.sql import dialect


def reader(engine: sa.Engine) -> sa.Engine:
    """`engine` as read-only work should use it: autocommit on PostgreSQL; a deferred
    (non-locking) transaction on SQLite."""
    if dialect.is_postgres(engine):
        return engine.execution_options(csbs_write=False, isolation_level="AUTOCOMMIT")
    return engine.execution_options(csbs_write=False)
