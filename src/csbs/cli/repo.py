"""`csbs repo`: audit, verify and re-key the backup repositories."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from csbs.cli.common import (
    DatabaseUrlOpt,
    DataDirOpt,
    console,
    csbs_errors,
    err_console,
    settings_from,
)
from csbs.domain.errors import CsbsError, NotFound

if TYPE_CHECKING:
    from csbs import app as composition
    from csbs.repository import Repository

repo_app = typer.Typer(
    help="Backup repositories: audit, verify, master key.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Blob store URL (file:///..., s3://...); default: the repository_url setting "
        "(env CSBS_REPOSITORY_URL), else file://<data dir>/repository.",
        show_default=False,
    ),
]


@contextlib.contextmanager
def open_repository(
    data_dir: Path | None, database_url: str | None, store_url: str | None
) -> Iterator[Repository]:
    """The Repository of this deployment, built by the composition root exactly as every
    other process builds it (settings, master key, store), over the migrated database and
    the blob store `--store` names, else the configured one; checked to be the
    deployment's (a store reached by another URL is, if it holds the deployment's marker)."""
    with _opened(data_dir, database_url, store_url) as runtime:
        yield runtime.services.repository


@contextlib.contextmanager
def _opened(
    data_dir: Path | None, database_url: str | None, store_url: str | None
) -> Iterator[composition.Runtime]:
    from csbs import app as composition
    from csbs import migrations

    settings = settings_from(data_dir=data_dir, database_url=database_url, repository_url=store_url)
    runtime = composition.build(settings)
    try:
        with csbs_errors():
            migrations.upgrade(runtime.services.db.engine)
            composition.check_deployment(runtime)
        yield runtime
    finally:
        runtime.services.repository.store.close()
        runtime.close()


def _project_id(runtime: composition.Runtime, project: str) -> str:
    """The id of the project named or numbered `project`; a value that names no project
    is taken as it is, a repository project id (the repository knows ids only, and a raw
    repository backup of `repo verify` may belong to none of the metadata's projects)."""
    try:
        return runtime.services.identity.resolve_project(project).id
    except NotFound:
        return project


@repo_app.command("check")
def check(
    project: Annotated[
        str | None, typer.Option("--project", help="Only this project (name or id).")
    ] = None,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also read and verify every chunk.")
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Remove leaked blobs and take group's and others' access away."
        ),
    ] = False,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Mark-and-sweep audit: missing, leaked and corrupt chunks, and the directories and
    files of a local repository that group or others may use; exit 1 on any problem."""
    from csbs.repository import RepositoryError

    with _opened(data_dir, database_url, store) as runtime:
        repo = runtime.services.repository
        try:
            pid = _project_id(runtime, project) if project else None
            report = repo.check(pid, read_data=read_data)
        except RepositoryError as exc:
            err_console.print(f"[red]check failed:[/red] {exc}")
            raise typer.Exit(1) from exc
        console.print(
            f"{len(report.projects)} projects, {report.chunks} chunks: "
            f"{len(report.missing)} missing, {len(report.leaked)} leaked, "
            f"{len(report.corrupt)} corrupt, {len(report.mismatches)} bookkeeping errors, "
            f"{len(report.loose_modes)} open to group or others",
            highlight=False,
        )
        maintenance = runtime.services.maintenance
        for checked in report.projects:
            space = maintenance.space(checked)
            by = f" by {space.release_by.isoformat()}" if space.release_by is not None else ""
            console.print(
                f"project {checked}: {space.stored_bytes} bytes stored, "
                f"{space.pending_release_bytes} bytes pending release{by}",
                highlight=False,
            )
        for kind, items in (
            ("missing", report.missing),
            ("leaked", report.leaked),
            ("corrupt", report.corrupt),
            ("mismatch", report.mismatches),
        ):
            for item in items:
                console.print(f"{kind}: {item}", highlight=False)
        for loose in report.loose_modes:
            what = "directory" if loose.is_dir else "file"
            console.print(
                f"mode: {what} {loose.path or '.'} is {loose.mode:04o}, want "
                f"{loose.mode & 0o700:04o}",
                highlight=False,
            )
        if repair and report.leaked:
            console.print(f"removed {repo.repair(report)} leaked blobs", highlight=False)
        if repair and report.loose_modes:
            console.print(f"tightened {repo.tighten(report)} modes", highlight=False)
        if not report.ok:
            raise typer.Exit(1)


@repo_app.command("verify")
def verify(
    backup: Annotated[str, typer.Argument(help="Backup (checkpoint item) id.")],
    project: Annotated[
        str | None,
        typer.Option("--project", help="Project name or id (only for a raw repository backup id)."),
    ] = None,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Read back every chunk of every disk of a backup and check each image digest."""
    from csbs import app as composition
    from csbs.repository import RepositoryError, memtune

    memtune.tune_malloc()  # this process runs the restore pipeline
    repo_backup, project_id = backup, project
    # A CSBS backup id names the repository backup its last attempt wrote.
    runtime = composition.build(settings_from(data_dir=data_dir, database_url=database_url))
    try:
        found = runtime.services.backups.get(None, backup)
        repo_backup = str(found.extra.get("repository_backup_id", backup))
        project_id = found.project_id
    except CsbsError:
        pass
    finally:
        runtime.close()
    if project_id is None:
        err_console.print(f"[red]error:[/red] no backup {backup}; give --project for a raw id")
        raise typer.Exit(1)
    with _opened(data_dir, database_url, store) as runtime:
        try:
            if project_id == project:  # given, not the backup's: a name or an id
                project_id = _project_id(runtime, project_id)
            results = runtime.services.repository.verify(project_id, repo_backup)
        except RepositoryError as exc:
            err_console.print(f"[red]verify failed:[/red] {exc}")
            raise typer.Exit(1) from exc
        total = sum(r.total_bytes for r in results)
        console.print(f"backup {backup}: {len(results)} disks, {total} bytes, all verified")


@repo_app.command("chunk-size")
def chunk_size(
    set_: Annotated[
        bool,
        typer.Option(
            "--set",
            help="Record this process's chunk_size setting (CSBS_CHUNK_SIZE) as the "
            "deployment's: projects whose repository is created from now on take it.",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Show the chunk size that new projects' repositories take (the deployment's).

    Recorded at the first start; a project keeps the chunk size its repository was
    created with, whatever the setting says later.
    """
    with open_repository(data_dir, database_url, None) as repo:
        size = repo.deployment_chunk_size(replace=set_)
    console.print(f"chunk size of new project repositories: {size} bytes", highlight=False)


@repo_app.command("rotate-master-key")
def rotate_master_key(
    new_key_file: Annotated[
        Path,
        typer.Option(
            "--new-key-file", help="File with the new key (created with a random key if missing)."
        ),
    ],
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Re-wrap every project's data key under a new master key; no data is rewritten.

    Afterwards point CSBS_MASTER_KEY_FILE (or CSBS_MASTER_KEY) at the new key. Safe to run
    again after an interruption.
    """
    from csbs.repository import load_or_create_master_key

    new = load_or_create_master_key(new_key_file)
    with open_repository(data_dir, database_url, store) as repo:
        # The deployment's key, as the identity check found it; the recorded fingerprint
        # becomes the new key's once every project is re-wrapped.
        changed = repo.rotate_master_key(repo.master_key, new)
    console.print(
        f"re-wrapped {changed} project keys; now set CSBS_MASTER_KEY_FILE={new_key_file}",
        highlight=False,
    )
