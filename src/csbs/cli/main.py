"""Top-level `csbs` command."""

from __future__ import annotations

from typing import Annotated

import typer

from csbs import app as composition
from csbs import migrations
from csbs.cli.admin import admin
from csbs.cli.common import DatabaseUrlOpt, DataDirOpt, console, settings_from

app = typer.Typer(
    help="csbs: Cloud Server Backup Service.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(admin, name="admin")
db_app = typer.Typer(help="Metadata database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def serve(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Bind address (env CSBS_HOST).", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port (env CSBS_PORT).", show_default=False)
    ] = None,
) -> None:
    """Run the API server (with embedded workers), creating the schema and admin on first start."""
    settings = settings_from(data_dir=data_dir, database_url=database_url, host=host, port=port)
    runtime = composition.build(settings)
    generated = composition.prepare(runtime)
    if generated:
        # Plain print: the password must not be wrapped or styled.
        print(
            "First start: created user 'admin' in project 'admin' with password:\n"
            f"    {generated}\n"
            "It is shown only this once (set CSBS_ADMIN_PASSWORD to choose it).",
            flush=True,
        )
    console.print(
        f"csbs serving on http://{settings.host}:{settings.port} (data dir {settings.data_dir})",
        highlight=False,
    )
    composition.serve(runtime)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Apply schema migrations (also done automatically by `csbs serve`)."""
    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    try:
        migrations.upgrade(runtime.services.db.engine)
        console.print(
            f"database at revision {migrations.current_revision(runtime.services.db.engine)}"
        )
    finally:
        runtime.close()


@app.command()
def version() -> None:
    """Print the version."""
    from csbs import __version__

    console.print(__version__)


def main() -> None:
    app()
