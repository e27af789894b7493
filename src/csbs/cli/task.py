"""`csbs task`: the task records (operation logs), read from the metadata database."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from csbs.cli.common import (
    DatabaseUrlOpt,
    DataDirOpt,
    api_errors,
    console,
    csbs_errors,
    err_console,
    local_api,
    settings_from,
)
from csbs.domain import errors
from csbs.domain.operations import TaskStatus

if TYPE_CHECKING:
    from csbs import app as composition
    from csbs.queue import Task
    from csbs.services.operation_logs import OperationLog

#: How often `wait_with_progress` reads the task: first, and at most.
_FIRST_POLL_SECONDS = 0.02
_LAST_POLL_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class TaskState:
    """What the wait loop shows of a task, read from the database or from the API."""

    id: str
    operation_type: str
    status: TaskStatus
    progress: int
    queue_position: int | None
    error_info: Mapping[str, Any] | None

    @classmethod
    def of(cls, log: OperationLog) -> TaskState:
        t = log.task
        return cls(t.id, t.operation_type, t.status, t.progress, log.queue_position, t.error_info)

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> TaskState:
        """From an operation log of the API (`{"operation_log": ...}`'s value)."""
        extra = body.get("extra_info") or {}
        return cls(
            id=body["id"],
            operation_type=body["operation_type"],
            status=TaskStatus(body["status"]),
            progress=int(extra.get("progress", 0)),
            queue_position=extra.get("queue_position"),
            error_info=body.get("error_info"),
        )


task_app = typer.Typer(help="Tasks (operation logs).", no_args_is_help=True, rich_markup_mode=None)


def _runtime(data_dir: DataDirOpt, database_url: DatabaseUrlOpt) -> composition.Runtime:
    from csbs import app as composition

    return composition.build(settings_from(data_dir=data_dir, database_url=database_url))


def _fmt(task: Task) -> list[str]:
    return [
        task.id,
        task.project_id[:12],
        task.operation_type,
        task.status.value,
        f"{task.progress}%",
        task.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        (task.error_info or {}).get("message", ""),
    ]


@task_app.command("list")
def list_tasks(
    project: Annotated[str | None, typer.Option("--project", help="Project name or id.")] = None,
    operation_type: Annotated[
        str | None, typer.Option("--type", help="backup, restore or delete.")
    ] = None,
    status: Annotated[TaskStatus | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """List tasks, newest first."""
    from csbs.domain.paging import page_request
    from csbs.queue import TaskFilter
    from csbs.services.operation_logs import DEFAULT_SORT, SORT_KEYS

    runtime = _runtime(data_dir, database_url)
    try:
        page = page_request(
            limit=limit,
            marker=None,
            offset=None,
            sort=None,
            allowed_sort=SORT_KEYS,
            default_sort=DEFAULT_SORT,
        )
        with csbs_errors():
            pid = runtime.services.identity.resolve_project(project).id if project else None
        result = runtime.services.operation_logs.search(
            TaskFilter(project_id=pid, operation_type=operation_type, status=status), page
        )
    finally:
        runtime.close()
    table = Table("id", "project", "type", "status", "progress", "created", "error")
    for log in result.items:
        table.add_row(*_fmt(log.task))
    console.print(table)


@task_app.command("show")
def show_task(
    task_id: str,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Show one task in full."""
    runtime = _runtime(data_dir, database_url)
    try:
        log = runtime.services.operation_logs.get(None, task_id)
    except errors.CsbsError as e:
        err_console.print(f"[red]error:[/red] {e.message}")
        raise typer.Exit(1) from e
    finally:
        runtime.close()
    t = log.task
    table = Table(show_header=False)
    for key, value in [
        ("id", t.id),
        ("project", t.project_id),
        ("type", t.operation_type),
        ("status", t.status.value),
        ("attempts", str(t.attempts)),
        ("created", str(t.created_at)),
        ("started", str(t.started_at)),
        ("ended", str(t.ended_at)),
        ("deadline", str(t.deadline_at)),
        ("extra_info", str(log.extra_info)),
        ("error_info", str(t.error_info)),
    ]:
        table.add_row(key, value)
    console.print(table)


@task_app.command("wait")
def wait_task(
    task_id: str,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait at most.")] = 3600.0,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Wait for a task with a progress bar; exit 0 on success, 1 otherwise."""
    api = local_api(data_dir, database_url)
    if api is not None:
        from csbs.cli.client import segment

        path = f"/v1/{api.project_id}/operation_logs/{segment(task_id)}"
        with api_errors(with_code=False):
            final = wait_with_progress(
                lambda: TaskState.from_wire(api.get(path, {"all_tenants": True})["operation_log"]),
                timeout,
            )
    else:
        runtime = _runtime(data_dir, database_url)
        try:
            final = wait_with_progress(
                lambda: TaskState.of(runtime.services.operation_logs.get(None, task_id)),
                timeout,
            )
        except errors.CsbsError as e:
            err_console.print(f"[red]error:[/red] {e.message}")
            raise typer.Exit(1) from e
        finally:
            runtime.close()
    console.print(f"task {final.id}: {final.status.value}")
    if final.status is not TaskStatus.SUCCESS:
        if final.error_info:
            err_console.print(f"[red]{final.error_info.get('message', '')}[/red]")
        raise typer.Exit(1)


def wait_with_progress(read: Callable[[], TaskState], timeout: float) -> TaskState:
    """Poll a task (`read` reads it) until it is terminal, drawing its progress; returns
    its last state."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        bar = progress.add_task("waiting", total=100)
        # Short tasks end within tens of milliseconds of a wake-up: look again soon at first,
        # then less often (every half second for long ones).
        pause = _FIRST_POLL_SECONDS
        while True:
            t = read()
            label = f"{t.operation_type} {t.status.value}"
            if t.queue_position:
                label += f" (queue position {t.queue_position})"
            progress.update(bar, completed=t.progress, description=label)
            if t.status.terminal or time.monotonic() >= deadline:
                return t
            time.sleep(pause)
            pause = min(pause * 1.5, _LAST_POLL_SECONDS)
