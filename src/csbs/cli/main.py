"""Top-level `csbs` command."""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Mapping
from typing import Annotated

import typer

from csbs.cli import lean_params
from csbs.cli.backup import restore as restore_command
from csbs.cli.bench import bench
from csbs.cli.common import DatabaseUrlOpt, DataDirOpt, console, csbs_errors, settings_from

lean_params.install()
#: The top group and its own commands; the groups are added by `_tree`.
_top = typer.Typer(
    help="csbs: Cloud Server Backup Service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help and usage errors (every group): rich's renderer loads its Markdown stack,
    # a tenth of a second or more, for a page of text.
    rich_markup_mode=None,
)
_top.command("restore")(restore_command)
_top.command("bench")(bench)
db_app = typer.Typer(help="Metadata database.", no_args_is_help=True, rich_markup_mode=None)
#: The groups of commands, in the order help lists them: name, module, its typer.
_GROUPS = (
    ("admin", "csbs.cli.admin", "admin"),
    ("task", "csbs.cli.task", "task_app"),
    ("worker", "csbs.cli.worker", "worker_app"),
    ("server", "csbs.cli.server", "server_app"),
    ("backup", "csbs.cli.backup", "backup_app"),
    ("policy", "csbs.cli.policy", "policy_app"),
    ("tag", "csbs.cli.tag", "tag_app"),
    ("repo", "csbs.cli.repo", "repo_app"),
    ("db", __name__, "db_app"),
)


def _tree(only: str | None = None) -> typer.Typer:
    """The command tree: every group, or only the group named `only` (whose module alone
    is imported)."""
    tree = copy.copy(_top)
    tree.registered_groups = []
    for name, module, attribute in _GROUPS:
        if only is None or name == only:
            tree.add_typer(getattr(importlib.import_module(module), attribute), name=name)
    return tree


def _whole() -> typer.Typer:
    tree: typer.Typer | None = globals().get("app")
    if tree is None:
        tree = globals()["app"] = _tree()
    return tree


def __getattr__(name: str) -> typer.Typer:
    # `app`, the whole tree, is made when first asked for: a process that runs one command
    # builds only what `lean_app` gives it.
    if name == "app":
        return _whole()
    raise AttributeError(name)


@_top.command()
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
    with csbs_errors():
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


@_top.command()
def scheduler(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Run the policy scheduler alone (one instance leads across machines; others stand by)."""
    from csbs import app as composition
    from csbs import migrations
    from csbs.app.run import run_scheduler

    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    with csbs_errors():
        migrations.upgrade(runtime.services.db.engine)
        composition.check_deployment(runtime)
    console.print("csbs scheduler: firing due policies while it leads", highlight=False)
    run_scheduler(runtime)


@_top.command()
def doctor(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Check the deployment from this machine (database, schema, repository, master key,
    workers, autovacuum): one line per problem and exit 1, or one line of what is fine.
    Creates nothing."""
    from csbs.app import doctor as checks

    diagnosis = checks.diagnose(settings_from(data_dir=data_dir, database_url=database_url))
    for problem in diagnosis.problems:
        print(problem, flush=True)
    if not diagnosis.healthy:
        raise typer.Exit(1)
    print(diagnosis.summary(), flush=True)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Apply schema migrations (also done automatically by `csbs serve`)."""
    from csbs import app as composition
    from csbs import migrations

    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    try:
        with csbs_errors():
            migrations.upgrade(runtime.services.db.engine)
            composition.check_deployment(runtime)
        console.print(
            f"database at revision {migrations.current_revision(runtime.services.db.engine)}"
        )
    finally:
        runtime.close()


@_top.command()
def version() -> None:
    """Print the version."""
    from csbs import __version__

    console.print(__version__)


def main() -> None:
    """`csbs` as a process runs it: the command tree built only as far as the command line
    reaches (see `lean_app`)."""
    lean_app(sys.argv[1:], os.environ)()


def lean_app(args: list[str], environ: Mapping[str, str]) -> typer.Typer:
    """`app`, or for a command of a group (`csbs backup list`) the tree with that group
    alone.

    typer builds every command of the tree before it parses anything, reading the
    signature and type hints of each function, and the tree needs every module of the
    command line: for the 40-odd commands of csbs that is most of the time a command takes
    when it asks a running `csbs serve` (decision 0018). The path a command line takes
    through the tree is the same in both (the top group, the named group, its commands),
    so parsing, help and errors are the same (`tests/cli/test_main.py` compares them).
    Help of the top group, its own commands and shell completion see the whole tree."""
    if args and not any(key.endswith("_COMPLETE") for key in environ):
        for name, _module, _attribute in _GROUPS:
            if name == args[0]:
                return _tree(only=name)
    return _whole()
