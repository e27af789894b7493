"""Alembic environment: always called with a connection from csbs.migrations.runner."""

from __future__ import annotations

from alembic import context

from csbs.migrations.runner import target_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
