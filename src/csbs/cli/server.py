"""`csbs server`: the server inventory, straight in the metadata database (operators)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from csbs import app as composition
from csbs.cli.common import DatabaseUrlOpt, DataDirOpt, console, err_console, settings_from
from csbs.domain import errors
from csbs.domain.inventory import Server, ServerStatus
from csbs.services.inventory import DiskSpec

server_app = typer.Typer(help="Servers and their disks.", no_args_is_help=True)
ProjectOpt = Annotated[str, typer.Option("--project", help="Project name or id.")]


def _runtime(data_dir: DataDirOpt, database_url: DatabaseUrlOpt) -> composition.Runtime:
    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    composition.prepare(runtime)
    return runtime


def _show(server: Server) -> None:
    console.print(
        f"[bold]{server.name}[/bold] {server.id} status={server.status.value} "
        f"host={server.host or '-'}",
        highlight=False,
    )
    table = Table("disk id", "name", "device", "size (bytes)", "system", "path")
    for d in server.disks:
        table.add_row(d.id, d.name, d.device_name, str(d.size_bytes), str(d.bootable), d.path)
    console.print(table)


def _fail(e: errors.CsbsError) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {e.message}")
    return typer.Exit(1)


@server_app.command("add")
def add(
    project: ProjectOpt,
    name: Annotated[str, typer.Option("--name", help="Server name.")],
    disk: Annotated[
        list[str], typer.Option("--disk", help="Disk path; repeat, system disk first.")
    ],
    host: Annotated[
        str | None, typer.Option("--host", help="Worker host that reaches the disks.")
    ] = None,
    status: Annotated[ServerStatus, typer.Option("--status")] = ServerStatus.STOPPED,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Register a server with its disks; prints the server id."""
    runtime = _runtime(data_dir, database_url)
    try:
        project_id = runtime.services.identity.resolve_project(project).id
        server = runtime.services.inventory.add_server(
            project_id, name, [DiskSpec(path=p) for p in disk], host=host, status=status
        )
    except errors.CsbsError as e:
        raise _fail(e) from e
    finally:
        runtime.close()
    print(server.id)


@server_app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project", help="Project name or id.")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """List servers."""
    runtime = _runtime(data_dir, database_url)
    try:
        project_id = runtime.services.identity.resolve_project(project).id if project else None
        servers = runtime.services.inventory.servers(project_id)
    except errors.CsbsError as e:
        raise _fail(e) from e
    finally:
        runtime.close()
    table = Table("id", "name", "project", "status", "host", "disks")
    for s in servers:
        table.add_row(s.id, s.name, s.project_id, s.status.value, s.host or "-", str(len(s.disks)))
    console.print(table)


@server_app.command("show")
def show(server_id: str, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Show a server and its disks."""
    runtime = _runtime(data_dir, database_url)
    try:
        _show(runtime.services.inventory.get(None, server_id))
    except errors.CsbsError as e:
        raise _fail(e) from e
    finally:
        runtime.close()


@server_app.command("remove")
def remove(
    server_id: str, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None
) -> None:
    """Remove a server from the inventory (its backups stay)."""
    runtime = _runtime(data_dir, database_url)
    try:
        runtime.services.inventory.remove(None, server_id)
    except errors.CsbsError as e:
        raise _fail(e) from e
    finally:
        runtime.close()


@server_app.command("set-status")
def set_status(
    server_id: str,
    status: ServerStatus,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Mark a server running or stopped (restores need it stopped)."""
    runtime = _runtime(data_dir, database_url)
    try:
        runtime.services.inventory.set_status(None, server_id, status)
    except errors.CsbsError as e:
        raise _fail(e) from e
    finally:
        runtime.close()
