"""`csbs tag`: tags of a backup (or, with --policy, of a policy) from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from csbs.cli.common import DatabaseUrlOpt, DataDirOpt, cli_runtime, console
from csbs.domain import errors

if TYPE_CHECKING:
    from csbs import app as composition
    from csbs.domain.tags import TagKind

tag_app = typer.Typer(
    help="Tags of backups and policies.", no_args_is_help=True, rich_markup_mode=None
)
PolicyOpt = Annotated[
    bool, typer.Option("--policy", help="RESOURCE is a policy id (needs --project).")
]
ProjectOpt = Annotated[
    str | None, typer.Option("--project", help="Project name or id (default: the backup's).")
]
ResourceArg = Annotated[str, typer.Argument(help="Backup id (or policy id with --policy).")]


def parse_tag(text: str) -> tuple[str, str]:
    """`key=value` (or `key=` for an empty value)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise errors.InvalidInput(f"tag {text!r} must be key=value")
    return key, value


def _target(
    runtime: composition.Runtime, resource: str, policy: bool, project: str | None
) -> tuple[TagKind, str]:
    """The kind and the project of the resource."""
    from csbs.domain.tags import TagKind

    services = runtime.services
    pid = services.identity.resolve_project(project).id if project else None
    if policy:
        if pid is None:
            raise errors.InvalidInput("--policy needs --project")
        return TagKind.POLICY, pid
    return TagKind.BACKUP, pid or services.backups.get(None, resource).project_id


@tag_app.command("add")
def add(
    resource: ResourceArg,
    tags: Annotated[list[str], typer.Argument(help="key=value; up to 10.")],
    policy: PolicyOpt = False,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Add tags (an existing key gets the new value)."""
    with cli_runtime(data_dir, database_url) as runtime:
        kind, pid = _target(runtime, resource, policy, project)
        runtime.services.tags.add(kind, pid, resource, [parse_tag(t) for t in tags])


@tag_app.command("remove")
def remove(
    resource: ResourceArg,
    keys: Annotated[list[str], typer.Argument(help="key, or key=value to remove only that.")],
    policy: PolicyOpt = False,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Remove tags; tags that are not there are ignored."""
    with cli_runtime(data_dir, database_url) as runtime:
        kind, pid = _target(runtime, resource, policy, project)
        items: list[tuple[str, str | None]] = []
        for k in keys:
            key, sep, value = k.partition("=")
            items.append((key, value if sep else None))
        runtime.services.tags.remove(kind, pid, resource, items)


@tag_app.command("list")
def list_(
    resource: ResourceArg,
    policy: PolicyOpt = False,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """List the tags of a resource."""
    with cli_runtime(data_dir, database_url) as runtime:
        kind, pid = _target(runtime, resource, policy, project)
        tags = runtime.services.tags.tags(kind, pid, resource)
    table = Table("key", "value")
    for t in tags:
        table.add_row(t.key, t.value)
    console.print(table)
