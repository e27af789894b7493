"""Options every subcommand shares, and how they become Settings.

The command line loads only what the command it runs needs: modules of the cli import
typer, rich and the domain at the top, and the composition root, settings and services
inside the commands (`csbs --help` and a listing must not load the HTTP stack).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from csbs.domain import errors

if TYPE_CHECKING:
    from csbs import app as composition
    from csbs.cli.client import LocalApi
    from csbs.config import Settings

# Piped output (scripts, tests) gets wide lines, so ids are never wrapped in tables.
console = Console(width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env CSBS_DATA_DIR).", show_default=False),
]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///... or postgresql://... (env CSBS_DATABASE_URL).",
        show_default=False,
    ),
]


def settings_from(**overrides: Any) -> Settings:
    """Settings from the environment plus the flags that were given; exit 2 on bad values."""
    from pydantic import ValidationError

    from csbs import logs
    from csbs.config import load_settings

    try:
        settings = load_settings(**overrides)
    except ValidationError as e:
        err_console.print(f"[red]invalid settings:[/red] {e}")
        raise typer.Exit(2) from e
    logs.configure(settings.log_level, json_lines=settings.log_json)
    return settings


@contextlib.contextmanager
def cli_runtime(
    data_dir: Path | None, database_url: str | None, *, prepare: bool = True
) -> Iterator[composition.Runtime]:
    """A runtime for one command: schema ready, closed afterwards, and any CSBS error
    printed with its code and turned into exit status 1."""
    from csbs import app as composition

    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    try:
        with csbs_errors():
            if prepare:
                composition.prepare(runtime)
            yield runtime
    finally:
        runtime.close()


@contextlib.contextmanager
def csbs_errors() -> Iterator[None]:
    """Any CSBS error printed as one line with its code, and exit status 1 (a process
    that is not the deployment its database records is refused this way too)."""
    try:
        yield
    except errors.CsbsError as e:
        # One line, however long: scripts and logs read it whole.
        err_console.print(
            f"[red]error:[/red] {e.code}: {e.message}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from e


def local_api(data_dir: Path | None, database_url: str | None) -> LocalApi | None:
    """The API of the `csbs serve` of this data directory and database, if one answers on
    its control socket (decision 0018); None: the command opens the database itself."""
    from csbs.cli.client import open_local_api

    return open_local_api(data_dir, database_url)


@contextlib.contextmanager
def api_errors(*, with_code: bool = True) -> Iterator[None]:
    """Print an error answer of the API as the command prints a CSBS error of its own
    (`cli_runtime`'s code and message, or the message alone; the API answers with the
    services' errors), and exit 1."""
    from csbs.cli.client import ApiError

    try:
        yield
    except ApiError as e:
        if with_code:
            err_console.print(f"[red]error:[/red] {e.code}: {e.message}", highlight=False)
        else:
            err_console.print(f"[red]error:[/red] {e.message}")
        raise typer.Exit(1) from e
    except OSError as e:
        err_console.print(f"[red]error:[/red] csbs serve did not answer: {e}", highlight=False)
        raise typer.Exit(1) from e
