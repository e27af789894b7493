"""Fixtures shared by every test: clean environment, databases on both engines, runtimes."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.databases import PG_ADMIN_URL, pg_available

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CSBS_* setting of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("CSBS_") and not key.startswith("CSBS_TEST_"):
            monkeypatch.delenv(key)
    # Only the discovery tests look at the host's libvirt (its domains are other tests' too).
    monkeypatch.setenv("CSBS_LIBVIRT_URI", "off")


@contextlib.contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """A URL whose connections see only a new, empty schema of the test PostgreSQL."""
    if not pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; start it (see README)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    # pre-ping: a test may have restarted the server since the schema was made
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty metadata database on SQLite and, in a second run, PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'csbs.db'}"
        return
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty metadata database on PostgreSQL only (outage and LISTEN tests)."""
    with fresh_pg_schema() as url:
        yield url
