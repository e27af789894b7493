"""Run Alembic programmatically: no alembic.ini, the script directory is this package.

Every command of the command line brings the database to the newest revision first; when it
is there already, which is nearly always, that is one query, and Alembic is not loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.exc

from csbs.db import tables
from csbs.queue import schema as queue_schema
from csbs.repository import schema as repository_schema

_HERE = Path(__file__).parent
#: Alembic's lock on PostgreSQL: concurrent starts of csbs migrate one at a time.
_PG_LOCK_KEY = 0x63736273  # "csbs"
_REVISION = re.compile(r'^(down_revision|revision)\b[^=\n]*=\s*"([^"]+)"', re.MULTILINE)

if TYPE_CHECKING:
    from alembic.config import Config


def target_metadata() -> list[sa.MetaData]:
    """Every MetaData whose tables the migrations must produce."""
    return [tables.Base.metadata, queue_schema.metadata, repository_schema.metadata]


def _config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (default: the newest)."""
    if revision == "head" and _at_head(engine):
        return
    from alembic import command

    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
        try:
            command.upgrade(_config(conn), revision)
            conn.commit()
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()


def newest_revision() -> str | None:
    """The head revision, read from the version scripts without loading Alembic; None unless
    there is exactly one."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (_HERE / "versions").glob("*.py"):
        for kind, value in _REVISION.findall(script.read_text()):
            (revisions if kind == "revision" else parents).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(engine: sa.Engine) -> bool:
    """Whether the database is at the newest revision (a migration under way elsewhere
    stamps its revision when it commits, so until then this says no)."""
    head = newest_revision()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            stamped = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    except sqlalchemy.exc.DBAPIError:
        return False  # no schema yet (or no database: the slow path says which)
    return [row[0] for row in stamped] == [head]


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()
