"""Where the test PostgreSQL is, and whether it answers."""

from __future__ import annotations

import functools
import os

import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "CSBS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@functools.cache
def pg_available() -> bool:
    engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()
