"""`csbs server`: the server inventory, straight in the metadata database (operators)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from csbs.cli.common import DatabaseUrlOpt, DataDirOpt, cli_runtime, console
from csbs.domain.inventory import Server, ServerStatus

server_app = typer.Typer(
    help="Servers and their disks.", no_args_is_help=True, rich_markup_mode=None
)
ProjectOpt = Annotated[str, typer.Option("--project", help="Project name or id.")]


def _show(server: Server) -> None:
    console.print(
        f"[bold]{server.name}[/bold] {server.id} status={server.status.value} "
        f"host={server.host or '-'} source={server.source.value} "
        f"project={server.project_id or '-'}",
        highlight=False,
    )
    table = Table("disk id", "name", "device", "size (bytes)", "system", "path")
    for d in server.disks:
        path = d.source or d.path
        if d.unsupported:
            path += f" (unsupported: {d.unsupported})"
        table.add_row(d.id, d.name, d.device_name, str(d.size_bytes), str(d.bootable), path)
    console.print(table)


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
    allow_hardlinks: Annotated[
        bool,
        typer.Option(
            "--allow-hardlinks",
            help="Accept disk image files that have other hard links (refused by default: "
            "a hard link can bring any file of the file system beneath a root).",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Register a server with its disks; prints the server id."""
    from csbs.services.inventory import DiskSpec

    with cli_runtime(data_dir, database_url) as runtime:
        project_id = runtime.services.identity.resolve_project(project).id
        server = runtime.services.inventory.add_server(
            project_id,
            name,
            [DiskSpec(path=p) for p in disk],
            host=host,
            status=status,
            allow_hardlinks=allow_hardlinks,
        )
    print(server.id)


@server_app.command("refresh")
def refresh(
    server_id: str,
    allow_hardlinks: Annotated[
        bool | None,
        typer.Option(
            "--allow-hardlinks/--no-allow-hardlinks",
            help="Change whether the server's disks may have other hard links.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Accept each disk of a server as it is now (after an image file was replaced).

    Backups and restores refuse a disk whose path names another file or device than the
    one registered; this records what each path names now, and its size.
    """
    with cli_runtime(data_dir, database_url) as runtime:
        _show(runtime.services.inventory.refresh(server_id, allow_hardlinks=allow_hardlinks))


@server_app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project", help="Project name or id.")] = None,
    unassigned: Annotated[
        bool,
        typer.Option("--unassigned", help="Only discovered servers that no project has yet."),
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """List servers (libvirt domains a worker discovered among them)."""
    with cli_runtime(data_dir, database_url) as runtime:
        project_id = runtime.services.identity.resolve_project(project).id if project else None
        servers = runtime.services.inventory.servers(project_id, unassigned=unassigned)
    table = Table("id", "name", "project", "status", "host", "source", "disks")
    for s in servers:
        table.add_row(
            s.id,
            s.name,
            s.project_id or "-",
            s.status.value,
            s.host or "-",
            s.source.value,
            str(len(s.disks)),
        )
    console.print(table)


@server_app.command("assign")
def assign(
    server_id: str,
    project: ProjectOpt,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Give a discovered server (a libvirt domain) that no project has to a project.

    A domain that OpenStack Nova defined belongs to the project its metadata names and
    needs no assignment.
    """
    with cli_runtime(data_dir, database_url) as runtime:
        project_id = runtime.services.identity.resolve_project(project).id
        _show(runtime.services.inventory.assign(server_id, project_id))


@server_app.command("show")
def show(server_id: str, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Show a server and its disks."""
    with cli_runtime(data_dir, database_url) as runtime:
        _show(runtime.services.inventory.get(None, server_id))


@server_app.command("remove")
def remove(
    server_id: str, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None
) -> None:
    """Remove a server from the inventory (its backups stay)."""
    with cli_runtime(data_dir, database_url) as runtime:
        runtime.services.inventory.remove(None, server_id)


@server_app.command("set-status")
def set_status(
    server_id: str,
    status: ServerStatus,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Mark a server running or stopped (restores need it stopped)."""
    with cli_runtime(data_dir, database_url) as runtime:
        runtime.services.inventory.set_status(None, server_id, status)
