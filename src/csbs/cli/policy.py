"""`csbs policy`: backup policies (schedules and retention) from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from csbs.cli.common import DatabaseUrlOpt, DataDirOpt, cli_runtime, console
from csbs.domain import errors

if TYPE_CHECKING:
    from csbs import app as composition
    from csbs.domain.policies import Policy
    from csbs.services.policies import ResourceSpec

policy_app = typer.Typer(
    help="Backup policies: schedules and retention.", no_args_is_help=True, rich_markup_mode=None
)
ProjectOpt = Annotated[str, typer.Option("--project", help="Project name or id.")]
ScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        help="'daily 02:00', 'daily 02:00,14:00', 'every 3 days 01:30', "
        "'weekly mon,thu 12:27', or iCalendar text.",
    ),
]
TimezoneOpt = Annotated[
    str | None,
    typer.Option("--timezone", help="Zone of the schedule's times (e.g. Europe/Berlin); UTC."),
]
ServerOpt = Annotated[
    list[str] | None, typer.Option("--server", help="Server id; repeat. Replaces the list.")
]
KeepOpt = Annotated[int | None, typer.Option("--keep", help="max_backups per server (-1: all).")]
DaysOpt = Annotated[
    int | None, typer.Option("--keep-days", help="retention_duration_days (-1: forever).")
]


def _resources(runtime: composition.Runtime, project_id: str, ids: list[str]) -> list[ResourceSpec]:
    from csbs.domain.inventory import SERVER_TYPE
    from csbs.services.policies import ResourceSpec

    out = []
    for server_id in ids:
        server = runtime.services.inventory.get(project_id, server_id)
        out.append(ResourceSpec(server.id, SERVER_TYPE, server.name))
    return out


def _definition(keep: int | None, keep_days: int | None, permanent: bool | None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if keep is not None:
        d["max_backups"] = keep
    if keep_days is not None:
        d["retention_duration_days"] = keep_days
    if permanent is not None:
        d["permanent"] = permanent
    return d


def _show(p: Policy) -> None:
    op = p.operation
    console.print(f"id:          {p.id}", highlight=False)
    console.print(f"name:        {p.name}  ({p.status})", highlight=False)
    console.print(f"servers:     {', '.join(f'{r.name} ({r.id})' for r in p.resources) or '-'}")
    rules = [line.strip() for line in op.pattern.splitlines()]
    rule = next((line for line in rules if line.upper().startswith("RRULE")), op.pattern)
    console.print(f"schedule:    {rule} {op.timezone or 'UTC'}", highlight=False)
    console.print(f"enabled:     {op.enabled}", highlight=False)
    nxt = p.next_run_at.strftime("%Y-%m-%d %H:%M:%S UTC") if p.next_run_at else "-"
    console.print(f"next run:    {nxt}", highlight=False)
    console.print(f"retention:   {dict(op.definition) or 'keep everything'}", highlight=False)


@policy_app.command("create")
def create(
    name: str,
    project: ProjectOpt,
    schedule: ScheduleOpt = None,
    timezone: TimezoneOpt = None,
    server: ServerOpt = None,
    keep: KeepOpt = None,
    keep_days: DaysOpt = None,
    permanent: Annotated[bool | None, typer.Option("--permanent/--not-permanent")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Only run with `run`.")] = False,
    description: Annotated[str, typer.Option("--description")] = "",
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Create a policy; prints its id."""
    from csbs.domain import schedules
    from csbs.services.policies import OperationSpec, PolicySpec

    with cli_runtime(data_dir, database_url) as runtime:
        if schedule is None:
            raise errors.InvalidInput("--schedule is required")
        pid = runtime.services.identity.resolve_project(project).id
        policy = runtime.services.policies.create(
            pid,
            PolicySpec(
                name=name,
                description=description,
                resources=_resources(runtime, pid, server or []),
                operation=OperationSpec(
                    enabled=not disabled,
                    operation_type="backup",
                    definition=_definition(keep, keep_days, permanent),
                    pattern=schedules.short_form(schedule),
                    timezone=timezone,
                ),
            ),
        )
        print(policy.id, flush=True)


@policy_app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project", help="Project name or id.")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """List policies (of one project, or all)."""
    from csbs.domain.paging import page_request
    from csbs.domain.policies import PolicyFilter
    from csbs.services.policies import DEFAULT_SORT, SORT_KEYS

    with cli_runtime(data_dir, database_url) as runtime:
        pid = runtime.services.identity.resolve_project(project).id if project else None
        page = page_request(
            limit=1000,
            marker=None,
            offset=None,
            sort=None,
            allowed_sort=SORT_KEYS,
            default_sort=DEFAULT_SORT,
        )
        result = runtime.services.policies.search(PolicyFilter(project_id=pid), page)
        table = Table("id", "name", "status", "enabled", "servers", "next run (UTC)")
        for p in result.items:
            nxt = p.next_run_at.strftime("%Y-%m-%d %H:%M") if p.next_run_at else "-"
            table.add_row(
                p.id, p.name, p.status, str(p.operation.enabled), str(len(p.resources)), nxt
            )
        console.print(table)


@policy_app.command("show")
def show(policy_id: str, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Show a policy and its last runs (with the servers a run skipped, and why)."""
    with cli_runtime(data_dir, database_url) as runtime:
        p = runtime.services.policies.get(None, policy_id)
        _show(p)
        for run in runtime.services.policies.runs(None, policy_id, limit=10):
            skipped = "; ".join(f"{x['server_id']}: {x['reason']}" for x in run.skipped)
            console.print(
                f"run:         {run.slot_at:%Y-%m-%d %H:%M} {run.trigger} "
                f"record {run.checkpoint_id or '-'}" + (f" skipped {skipped}" if skipped else ""),
                highlight=False,
            )


@policy_app.command("update")
def update(
    policy_id: str,
    name: Annotated[str | None, typer.Option("--name")] = None,
    schedule: ScheduleOpt = None,
    timezone: TimezoneOpt = None,
    server: ServerOpt = None,
    keep: KeepOpt = None,
    keep_days: DaysOpt = None,
    permanent: Annotated[bool | None, typer.Option("--permanent/--not-permanent")] = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Change a policy: servers (replaced), schedule, retention, enabled."""
    from csbs.domain import schedules
    from csbs.services.policies import OperationSpec, PolicySpec

    with cli_runtime(data_dir, database_url) as runtime:
        current = runtime.services.policies.get(None, policy_id)
        definition = None
        if keep is not None or keep_days is not None or permanent is not None:
            definition = {
                **current.operation.definition,
                **_definition(keep, keep_days, permanent),
            }
        p = runtime.services.policies.update(
            None,
            policy_id,
            PolicySpec(
                name=name,
                resources=_resources(runtime, current.project_id, server) if server else None,
                operation=OperationSpec(
                    id=current.operation.id,
                    enabled=enable,
                    definition=definition,
                    pattern=schedules.short_form(schedule) if schedule else None,
                    timezone=timezone,
                ),
            ),
        )
        _show(p)


@policy_app.command("delete")
def delete(
    policy_id: str, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None
) -> None:
    """Delete a policy (the backups it made stay)."""
    with cli_runtime(data_dir, database_url) as runtime:
        runtime.services.policies.delete(None, policy_id)
        console.print(f"deleted policy {policy_id}", highlight=False)


@policy_app.command("run")
def run(
    policy_id: str,
    server: Annotated[
        list[str] | None, typer.Option("--server", help="Only these servers; repeat.")
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Back up the policy's servers now; prints the backup record id."""
    with cli_runtime(data_dir, database_url) as runtime:
        p = runtime.services.policies.get(None, policy_id)
        checkpoint, backups = runtime.services.policies.execute(p.project_id, p.id, server)
        print(checkpoint.id, flush=True)
        for b in backups:
            console.print(f"  backup {b.id} of {b.resource_name}", highlight=False)
