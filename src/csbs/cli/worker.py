"""`csbs worker`: run a task worker; `csbs worker list`: the deployment's workers."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from csbs.cli.common import (
    DatabaseUrlOpt,
    DataDirOpt,
    cli_runtime,
    console,
    csbs_errors,
    settings_from,
)

worker_app = typer.Typer(
    help="Task workers: `csbs worker [OPTIONS]` runs one; `csbs worker list` shows them all.",
    invoke_without_command=True,
    rich_markup_mode=None,
)


@worker_app.callback()
def worker(
    ctx: typer.Context,
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
    if ctx.invoked_subcommand is not None:
        return
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
    with csbs_errors():
        migrations.upgrade(runtime.services.db.engine)
        composition.check_deployment(runtime)
    runtime.services.repository.warn_if_configured_otherwise()
    w = composition.make_worker(runtime)
    console.print(f"csbs worker {w.worker_id}: {w.concurrency} slots", highlight=False)
    run_worker(runtime, w)


def _ago(now: dt.datetime, then: dt.datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


@worker_app.command("list")
def list_workers(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """The workers that registered, alive or not (alive: a heartbeat within
    worker_stale_seconds); exit 1 when none is alive."""
    from rich.table import Table

    with cli_runtime(data_dir, database_url) as runtime:
        found = runtime.services.workers.list()
        now = runtime.services.clock.now()
    table = Table("host", "id", "version", "slots", "running", "started", "heartbeat", "alive")
    for w in found:
        table.add_row(
            w.host,
            w.id,
            w.version,
            str(w.slots),
            str(w.running),
            w.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            _ago(now, w.heartbeat_at),
            "yes" if w.alive else "NO",
        )
    console.print(table)
    if not any(w.alive for w in found):
        raise typer.Exit(1)
