"""`csbs backup` and `csbs restore`: the backup operations from the command line."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from csbs.cli.common import (
    DatabaseUrlOpt,
    DataDirOpt,
    api_errors,
    cli_runtime,
    console,
    err_console,
    local_api,
)
from csbs.cli.tag import parse_tag
from csbs.cli.task import TaskState, wait_with_progress
from csbs.domain import errors
from csbs.domain.inventory import unassigned
from csbs.domain.operations import TaskStatus

if TYPE_CHECKING:
    from csbs import app as composition
    from csbs.cli.client import LocalApi
    from csbs.domain.backups import Backup

backup_app = typer.Typer(help="Backups of servers.", no_args_is_help=True, rich_markup_mode=None)
ProjectOpt = Annotated[str | None, typer.Option("--project", help="Project name or id.")]


def _from_database(runtime: composition.Runtime, task_id: str) -> Callable[[], TaskState]:
    return lambda: TaskState.of(runtime.services.operation_logs.get(None, task_id))


def _from_api(api: LocalApi, project_id: str, task_id: str) -> Callable[[], TaskState]:
    path = f"/v1/{project_id}/operation_logs/{task_id}"
    return lambda: TaskState.from_wire(api.get(path)["operation_log"])


def _wait(read: Callable[[], TaskState]) -> None:
    final = wait_with_progress(read, timeout=7 * 24 * 3600)
    if final.status is not TaskStatus.SUCCESS:
        err_console.print(
            f"[red]{final.status.value}:[/red] {(final.error_info or {}).get('message', '')}"
        )
        raise typer.Exit(1)


@backup_app.command("create")
def create(
    server_id: str,
    name: Annotated[str | None, typer.Option("--name", help="Backup name.")] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Wait with a progress bar.")] = False,
    full_read: Annotated[
        bool,
        typer.Option(
            "--full-read",
            help="Read every disk, also image files unchanged since the previous backup "
            "(a full backup: incremental=false).",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Back up a server (all its disks); prints the backup id."""
    api = local_api(data_dir, database_url)
    if api is not None:
        with api_errors():
            backup_id, read = _protect_through(api, server_id, name, description, full_read)
            print(backup_id, flush=True)
            if wait:
                _wait(read)
        return
    from csbs.services.backups import ProtectRequest

    with cli_runtime(data_dir, database_url) as runtime:
        server = runtime.services.inventory.get(None, server_id)
        if server.project_id is None:
            raise unassigned(server.id)
        _cp, backup = runtime.services.backups.protect(
            server.project_id,
            ProtectRequest(
                server_id,
                name=name,
                description=description,
                incremental=False if full_read else None,
            ),
        )
        print(backup.id, flush=True)
        if wait and backup.task_id is not None:
            _wait(_from_database(runtime, backup.task_id))


def _protect_through(
    api: LocalApi, server_id: str, name: str | None, description: str, full_read: bool = False
) -> tuple[str, Callable[[], TaskState]]:
    """R1 through the API: the server's project, the backup record, then its one backup
    (R1 answers with the record; B4 by `checkpoint_id` names the backup and its task)."""
    from csbs.cli.client import segment
    from csbs.domain.providers import CSBS_PROVIDER_ID

    server = api.get(f"/v1/{api.project_id}/servers/{segment(server_id)}", {"all_tenants": True})
    project_id = server["server"]["project_id"]
    server_id = server["server"]["id"]
    if project_id is None:
        raise unassigned(server_id)
    protect: dict[str, Any] = {"description": description}
    if name is not None:
        protect["backup_name"] = name
    if full_read:
        protect["incremental"] = False
    checkpoint = api.post(
        f"/v1/{project_id}/providers/{CSBS_PROVIDER_ID}/resources/{server_id}/action",
        {"protect": protect},
    )["checkpoint"]
    (item,) = api.get(f"/v1/{project_id}/checkpoint_items", {"checkpoint_id": checkpoint["id"]})[
        "checkpoint_items"
    ]
    return item["id"], _from_api(api, project_id, item["extend_info"]["taskid"])


@dataclasses.dataclass(frozen=True)
class _Listed:
    """What `backup list` shows of a backup, read from the database or from the API."""

    id: str
    name: str
    server: str
    status: str
    progress: int
    created_at: dt.datetime
    logical_bytes: int
    new_bytes: int

    @classmethod
    def of(cls, b: Backup) -> _Listed:
        return cls(
            b.id,
            b.name,
            b.resource_name,
            b.status.value,
            b.progress,
            b.created_at,
            b.logical_bytes,
            b.new_bytes,
        )

    @classmethod
    def from_wire(cls, item: Mapping[str, Any]) -> _Listed:
        """From a checkpoint item of B4 (its timestamps are UTC without a zone)."""
        extend = item["extend_info"]
        return cls(
            item["id"],
            item["name"],
            extend["resource_name"],
            item["status"],
            int(extend["progress"]),
            dt.datetime.fromisoformat(item["created_at"]).replace(tzinfo=dt.UTC),
            int(extend["logical_bytes"]),
            int(extend["new_bytes"]),
        )


def _print_backups(backups: Iterable[_Listed]) -> None:
    table = Table("id", "name", "server", "status", "progress", "created", "MiB", "new MiB")
    for b in backups:
        table.add_row(
            b.id,
            b.name,
            b.server,
            b.status,
            f"{b.progress}%",
            b.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{b.logical_bytes / 2**20:.1f}",
            f"{b.new_bytes / 2**20:.1f}",
        )
    console.print(table)


@backup_app.command("list")
def list_(
    project: ProjectOpt = None,
    server: Annotated[str | None, typer.Option("--server", help="Server id.")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="key=value the backup carries; repeat.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """List backups, newest first."""
    # A project is named by name or id, which the API cannot resolve, and B4 has no tag
    # filter: those listings, and one by a status no backup has (an empty list, where the
    # API answers 400), read the database.
    from csbs.domain.backups import BackupFilter, BackupStatus, Tag

    if not project and not tag and (status is None or status in set(BackupStatus)):
        api = local_api(data_dir, database_url)
        if api is not None:
            with api_errors():
                body = api.get(
                    f"/v1/{api.project_id}/checkpoint_items",
                    {"all_tenants": True, "resource_id": server, "status": status, "limit": limit},
                )
            _print_backups(_Listed.from_wire(item) for item in body["checkpoint_items"])
            return
    from csbs.domain.paging import page_request
    from csbs.services.backups import DEFAULT_SORT, SORT_KEYS

    with cli_runtime(data_dir, database_url) as runtime:
        pid = runtime.services.identity.resolve_project(project).id if project else None
        page = page_request(
            limit=limit,
            marker=None,
            offset=None,
            sort=None,
            allowed_sort=SORT_KEYS,
            default_sort=DEFAULT_SORT,
        )
        tags = tuple(Tag(*parse_tag(t)) for t in tag or [])
        result = runtime.services.backups.search(
            BackupFilter(project_id=pid, resource_id=server, status=status, tags=tags), page
        )
    _print_backups(_Listed.of(b) for b in result.items)


@backup_app.command("count")
def count(
    project: ProjectOpt = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Count backups."""
    from csbs.domain.backups import BackupFilter

    with cli_runtime(data_dir, database_url) as runtime:
        pid = runtime.services.identity.resolve_project(project).id if project else None
        print(runtime.services.backups.count(BackupFilter(project_id=pid, status=status)))


@backup_app.command("show")
def show(backup_id: str, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Show a backup and its disk backups."""
    with cli_runtime(data_dir, database_url) as runtime:
        b = runtime.services.backups.get(None, backup_id)
    console.print(
        f"[bold]{b.name}[/bold] {b.id} status={b.status.value} server={b.resource_name} "
        f"incremental={b.incremental} consistency={b.consistency}",
        highlight=False,
    )
    if b.fail_reason:
        console.print(f"failed ({b.fail_op}): {b.fail_reason}", highlight=False)
    table = Table(
        "disk backup id", "disk", "device", "size", "new bytes", "reused bytes", "stored bytes"
    )
    for d in b.disks:
        table.add_row(
            d.id,
            d.disk_id,
            d.device_name,
            str(d.source_size),
            str(d.new_bytes),
            str(d.reused_bytes),
            str(d.stored_bytes),
        )
    console.print(table)


def restore(
    backup_id: str,
    to: Annotated[str, typer.Option("--to", help="Target server id (stopped).")],
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="DISKBACKUP=DISK; default: disk backups onto disks in order."),
    ] = None,
    power_on: Annotated[
        bool, typer.Option("--power-on", help="Mark the server running after.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait with a progress bar.")] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Restore a backup onto a server's disks; prints the restore id."""
    from csbs.domain.restores import VolumeMapping
    from csbs.services.restores import RestoreRequest

    with cli_runtime(data_dir, database_url) as runtime:
        backup = runtime.services.backups.get(None, backup_id)
        target = runtime.services.inventory.get(backup.project_id, to)
        if mapping:
            pairs = []
            for m in mapping:
                source, sep, disk = m.partition("=")
                if not sep:
                    raise errors.InvalidInput(f"--map {m!r} must be DISKBACKUP=DISK")
                pairs.append(VolumeMapping(source, disk))
        else:
            pairs = [
                VolumeMapping(d.id, t.id) for d, t in zip(backup.disks, target.disks, strict=False)
            ]
        r = runtime.services.restores.restore(
            backup.project_id,
            RestoreRequest(
                checkpoint_id=backup.checkpoint_id,
                backup_id=backup.id,
                server_id=target.id,
                mappings=pairs,
                power_on=power_on,
            ),
        )
        print(r.id, flush=True)
        if wait and r.task_id is not None:
            _wait(_from_database(runtime, r.task_id))


@backup_app.command("delete")
def delete(
    checkpoint_id: str,
    item: Annotated[
        list[str] | None, typer.Option("--item", help="Backup id within the record; repeat.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait with a progress bar.")] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Delete the backups of a backup record (all, or those given with --item)."""
    with cli_runtime(data_dir, database_url) as runtime:
        cp = runtime.services.backups.checkpoint_any(checkpoint_id)
        task_ids = runtime.services.deletions.delete(cp.project_id, checkpoint_id, item or None)
        for task_id in task_ids:
            print(task_id, flush=True)
        if wait:
            for task_id in task_ids:
                _wait(_from_database(runtime, task_id))
