"""`csbs admin`: projects, users and tokens without going through the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from csbs.cli.common import (
    DatabaseUrlOpt,
    DataDirOpt,
    cli_runtime,
    console,
    csbs_errors,
    err_console,
    settings_from,
)
from csbs.domain import errors
from csbs.domain.identity import Role

if TYPE_CHECKING:
    from csbs import app as composition
    from csbs.domain.quotas import QuotaUsage

admin = typer.Typer(
    help="Administer projects, users and tokens.", no_args_is_help=True, rich_markup_mode=None
)
project_app = typer.Typer(help="Projects.", no_args_is_help=True, rich_markup_mode=None)
user_app = typer.Typer(help="Users.", no_args_is_help=True, rich_markup_mode=None)
admin.add_typer(project_app, name="project")
admin.add_typer(user_app, name="user")
quota_app = typer.Typer(
    help="Quotas of projects (-1 = unlimited).", no_args_is_help=True, rich_markup_mode=None
)
admin.add_typer(quota_app, name="quota")


def _runtime(data_dir: DataDirOpt, database_url: DatabaseUrlOpt) -> composition.Runtime:
    from csbs import app as composition

    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    with csbs_errors():
        composition.prepare(runtime)
    return runtime


@project_app.command("create")
def project_create(
    name: Annotated[str, typer.Argument(help="Project name.")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Create a project and print its id."""
    runtime = _runtime(data_dir, database_url)
    try:
        project = runtime.services.identity.create_project(name)
    except errors.CsbsError as e:
        err_console.print(f"[red]error:[/red] {e.message}")
        raise typer.Exit(1) from e
    finally:
        runtime.close()
    console.print(project.id)


@project_app.command("list")
def project_list(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """List projects."""
    runtime = _runtime(data_dir, database_url)
    try:
        projects = runtime.services.identity.list_projects()
    finally:
        runtime.close()
    table = Table("id", "name", "enabled", "created")
    for p in projects:
        table.add_row(p.id, p.name, str(p.enabled), p.created_at.isoformat())
    console.print(table)


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="User name.")],
    project: Annotated[str, typer.Option("--project", help="Project name or id.")],
    role: Annotated[Role, typer.Option("--role", help="Role in the project.")] = Role.MEMBER,
    password: Annotated[
        str,
        typer.Option(
            "--password",
            envvar="CSBS_USER_PASSWORD",
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="Password (env CSBS_USER_PASSWORD; prompted when absent).",
        ),
    ] = "",
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Create a user with a role in a project (or give an existing user that role)."""
    runtime = _runtime(data_dir, database_url)
    try:
        user = runtime.services.identity.create_user(name, password, project, role)
    except errors.CsbsError as e:
        err_console.print(f"[red]error:[/red] {e.message}")
        raise typer.Exit(1) from e
    finally:
        runtime.close()
    console.print(user.id)


@user_app.command("list")
def user_list(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """List users and their roles."""
    runtime = _runtime(data_dir, database_url)
    try:
        users = runtime.services.identity.list_users()
    finally:
        runtime.close()
    table = Table("id", "name", "roles")
    for user, roles in users:
        table.add_row(user.id, user.name, ", ".join(f"{p}:{r.value}" for p, r in roles))
    console.print(table)


@admin.command("token")
def token(
    user: Annotated[str, typer.Option("--user", help="User name.")],
    project: Annotated[str, typer.Option("--project", help="Project name or id.")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Print a token for USER in PROJECT (for scripts)."""
    runtime = _runtime(data_dir, database_url)
    try:
        issued = runtime.services.identity.issue_token_for(user, project)
    except errors.CsbsError as e:
        err_console.print(f"[red]error:[/red] {e.message}")
        raise typer.Exit(1) from e
    finally:
        runtime.close()
    print(issued.secret)


def _print_quotas(usage: QuotaUsage) -> None:
    table = Table("resource", "quota", "used")
    table.add_row("backups", str(usage.quotas.backups), str(usage.backups))
    table.add_row(
        "backup_capacity (GB)",
        str(usage.quotas.capacity_gb),
        f"{usage.capacity_gb} ({usage.stored_bytes} bytes)",
    )
    table.add_row(
        "pending release (bytes)",
        "",
        f"{usage.pending_release_bytes}"
        + (f" by {usage.release_by.isoformat()}" if usage.release_by is not None else ""),
    )
    console.print(table)


QuotaProjectOpt = Annotated[str, typer.Option("--project", help="Project name or id.")]


@quota_app.command("set")
def quota_set(
    project: QuotaProjectOpt,
    backups: Annotated[
        int | None, typer.Option("--backups", help="Retained backups; -1 = unlimited.")
    ] = None,
    capacity_gb: Annotated[
        int | None,
        typer.Option("--capacity-gb", help="GB stored (deduplicated); -1 = unlimited."),
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Set a project's quotas (those not given stay as they are)."""
    with cli_runtime(data_dir, database_url) as runtime:
        pid = runtime.services.identity.resolve_project(project).id
        usage = runtime.services.quotas.set(pid, backups=backups, capacity_gb=capacity_gb)
    _print_quotas(usage)


@quota_app.command("show")
def quota_show(
    project: QuotaProjectOpt, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None
) -> None:
    """Show a project's quotas and usage."""
    with cli_runtime(data_dir, database_url) as runtime:
        pid = runtime.services.identity.resolve_project(project).id
        usage = runtime.services.quotas.usage(pid)
    _print_quotas(usage)
