"""Top-level `csbs` command."""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping
from typing import Annotated

import typer

from csbs.cli import lean_params
from csbs.cli.admin import admin
from csbs.cli.backup import backup_app
from csbs.cli.backup import restore as restore_command
from csbs.cli.bench import bench
from csbs.cli.common import DatabaseUrlOpt, DataDirOpt, console, settings_from
from csbs.cli.policy import policy_app
from csbs.cli.repo import repo_app
from csbs.cli.server import server_app
from csbs.cli.tag import tag_app
from csbs.cli.task import task_app

lean_params.install()
app = typer.Typer(
    help="csbs: Cloud Server Backup Service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help and usage errors (every group): rich's renderer loads its Markdown stack,
    # a tenth of a second or more, for a page of text.
    rich_markup_mode=None,
)
app.add_typer(admin, name="admin")
app.add_typer(task_app, name="task")
app.add_typer(server_app, name="server")
app.add_typer(backup_app, name="backup")
app.add_typer(policy_app, name="policy")
app.add_typer(tag_app, name="tag")
app.add_typer(repo_app, name="repo")
app.command("restore")(restore_command)
app.command("bench")(bench)
db_app = typer.Typer(help="Metadata database.", no_args_is_help=True, rich_markup_mode=None)
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
    """Run the API server (and its task workers), creating the schema and admin on first start."""
    from csbs import app as composition
    from csbs.app import serving

    settings = settings_from(data_dir=data_dir, database_url=database_url, host=host, port=port)
    runtime = composition.build(settings)
    generated = composition.prepare(runtime)
    runtime.services.repository.warn_if_configured_otherwise()
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
    serving.serve(runtime)


@app.command()
def worker(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="Tasks run at once (env CSBS_WORKER_CONCURRENCY)."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Host name tasks are routed by (env CSBS_WORKER_HOST)."),
    ] = None,
) -> None:
    """Run a task worker (for machines other than the one running `csbs serve`)."""
    from csbs import app as composition
    from csbs import migrations
    from csbs.app.run import run_worker

    settings = settings_from(
        data_dir=data_dir,
        database_url=database_url,
        worker_concurrency=concurrency,
        worker_host=host,
    )
    runtime = composition.build(settings)
    migrations.upgrade(runtime.services.db.engine)
    runtime.services.repository.warn_if_configured_otherwise()
    worker = composition.make_worker(runtime)
    console.print(f"csbs worker {worker.worker_id}: {worker.concurrency} slots", highlight=False)
    run_worker(runtime, worker)


@app.command()
def scheduler(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Run the policy scheduler alone (one instance leads across machines; others stand by)."""
    from csbs import app as composition
    from csbs import migrations
    from csbs.app.run import run_scheduler

    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    migrations.upgrade(runtime.services.db.engine)
    console.print("csbs scheduler: firing due policies while it leads", highlight=False)
    run_scheduler(runtime)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Apply schema migrations (also done automatically by `csbs serve`)."""
    from csbs import app as composition
    from csbs import migrations

    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    try:
        migrations.upgrade(runtime.services.db.engine)
        runtime.services.repository.deployment_chunk_size()
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
    """`csbs` as a process runs it: the command tree built only as far as the command line
    reaches (see `lean_app`)."""
    lean_app(sys.argv[1:], os.environ)()


def lean_app(args: list[str], environ: Mapping[str, str]) -> typer.Typer:
    """`app`, or for a command of a group (`csbs backup list`) `app` with that group alone.

    typer builds every command of the tree before it parses anything, reading the
    signature and type hints of each function: for the 40-odd commands of csbs that is
    most of the time a command takes when it asks a running `csbs serve` (decision 0016).
    The path a command line takes through the tree is the same in both (the top group, the
    named group, its commands), so parsing, help and errors are the same
    (`tests/cli/test_main.py` compares them). Help of the top group, its own commands and
    shell completion see the whole tree."""
    if not args or any(key.endswith("_COMPLETE") for key in environ):
        return app
    for group in app.registered_groups:
        if group.name == args[0]:
            lean = copy.copy(app)
            lean.registered_groups = [group]
            return lean
    return app
