"""Reads on PostgreSQL run without a transaction; writes keep theirs on both engines."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from csbs.db.engine import Database, create_engine
from csbs.sql import reads


def _in_transaction(conn: sa.Connection) -> bool:
    """Whether the driver's connection is inside a transaction right now."""
    dbapi = conn.connection.dbapi_connection
    if isinstance(dbapi, psycopg.Connection):
        return dbapi.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    return bool(dbapi.in_transaction)  # sqlite3


def test_reads_are_autocommit_on_postgresql_and_a_snapshot_on_sqlite(db_url: str) -> None:
    engine = create_engine(db_url, pool_size=1)
    db = Database(engine)
    postgres = engine.dialect.name == "postgresql"
    try:
        with db.read() as s:
            s.execute(sa.text("SELECT 1"))
            assert _in_transaction(s.connection()) is not postgres
        with reads.reader(engine).begin() as conn:
            conn.execute(sa.text("SELECT 1"))
            assert _in_transaction(conn) is not postgres
        # The pooled connection goes back to transactions for writers: a write is atomic.
        with db.write() as s:
            s.execute(sa.text("SELECT 1"))
            assert _in_transaction(s.connection())
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
            assert _in_transaction(conn)
    finally:
        engine.dispose()
