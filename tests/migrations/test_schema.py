"""Upgrading an empty database to head gives exactly the schema the code declares."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from csbs import migrations
from csbs.db.engine import create_engine


def test_upgrade_head_matches_models(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.head_revision()
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, migrations.target_metadata())
        assert diff == []
        # Idempotent: a second upgrade (every `csbs serve` start does one) changes nothing.
        migrations.upgrade(engine)
        assert set(sa.inspect(engine).get_table_names()) >= {"projects", "users", "tokens", "tasks"}
    finally:
        engine.dispose()


def test_the_newest_revision_read_without_alembic_is_alembics_head() -> None:
    """`upgrade` skips Alembic when the database is stamped with this revision."""
    from csbs.migrations.runner import newest_revision

    assert newest_revision() == migrations.head_revision()


def test_an_older_database_is_still_upgraded(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        migrations.upgrade(engine, "0009")
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
