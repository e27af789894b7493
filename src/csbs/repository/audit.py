"""The audit: mark every reference from the manifests and reference batches, sweep the store.

Mark: each complete disk's manifest is read back and its chunk ids counted; each backup's
unreleased reference batches are summed. Then every chunk row must carry exactly the
batches' count, every sealed backup's batches must equal its manifests, every chunk a
manifest names must have a stored row whose blob exists, and usage must equal the sums
over live rows. Sweep: every chunk blob in the store must belong to a row (or be waiting
in the garbage list). With `read_data`, every stored chunk is read and verified. On a
store of files (`FileModes`), every directory and file must be its owner's alone.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses

from csbs.blobstore import BlobNotFound, BlobStore, LooseMode, file_modes
from csbs.repository import envelope, errors, keys, layout, manifest
from csbs.repository.index import DELETING, SEALED, ChunkIndex, Usage
from csbs.repository.reclaim_index import ReclaimIndex


@dataclasses.dataclass
class CheckReport:
    """What the audit found; `ok` when nothing."""

    projects: list[str] = dataclasses.field(default_factory=list)
    chunks: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)  # "project chunk: why"
    leaked: list[str] = dataclasses.field(default_factory=list)  # blob names
    corrupt: list[str] = dataclasses.field(default_factory=list)  # "project chunk: why"
    mismatches: list[str] = dataclasses.field(default_factory=list)  # bookkeeping errors
    #: Directories and files of a local store that group or others may use.
    loose_modes: list[LooseMode] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing or self.leaked or self.corrupt or self.mismatches or self.loose_modes
        )


def check_project(
    index: ReclaimIndex,
    store: BlobStore,
    project_id: str,
    project_keys: keys.ProjectKeys,
    codec: envelope.Codec,
    report: CheckReport,
    *,
    read_data: bool = False,
    threads: int = 4,
) -> None:
    """Audit one project into `report`."""
    report.projects.append(project_id)
    backups = {b.backup_id: b for b in index.backups(project_id)}
    # Mark.
    expected: collections.Counter[str] = collections.Counter()
    by_backup: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for backup_id, _seq, counts in index.ref_batches(project_id):
        expected.update(counts)
        by_backup[backup_id].update(counts)
    in_manifests: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    manifest_names: set[str] = set()
    for record in index.manifests(project_id):
        name = layout.disk_manifest_name(project_id, record.backup_id, record.disk_id)
        manifest_names.add(name)
        backup = backups.get(record.backup_id)
        if backup is not None and backup.state == DELETING:
            continue  # its references may be released already; the deletion removes it
        try:
            the_manifest = manifest.open_manifest(
                project_keys, store.get(name), codec, record.manifest_id
            )
        except BlobNotFound:
            report.missing.append(f"{project_id} manifest {name}: blob missing")
            continue
        except errors.RepositoryError as exc:
            report.corrupt.append(f"{project_id} manifest {name}: {exc}")
            continue
        in_manifests[record.backup_id].update(the_manifest.chunk_ids())
    for backup_id, backup in backups.items():
        if backup.state == SEALED and by_backup[backup_id] != in_manifests[backup_id]:
            report.mismatches.append(
                f"{project_id} backup {backup_id}: references differ from its manifests"
            )
    for backup_id in in_manifests:
        if backup_id not in backups:
            report.mismatches.append(f"{project_id} backup {backup_id}: manifests of no backup")
    # Rows against the mark.
    rows: dict[str, tuple[int, bool]] = {}
    stored_sum = logical_sum = 0
    for row in index.chunk_rows(project_id):
        rows[row.chunk_id] = (int(row.generation), bool(row.stored))
        report.chunks += 1
        if row.refcount != expected.get(row.chunk_id, 0):
            report.mismatches.append(
                f"{project_id} chunk {row.chunk_id}: refcount {row.refcount}, "
                f"references {expected.get(row.chunk_id, 0)}"
            )
        if row.refcount > 0:
            stored_sum += row.stored_size
            logical_sum += row.logical_size
    for chunk_id in expected.keys() - rows.keys():
        report.mismatches.append(f"{project_id} chunk {chunk_id}: referenced but has no row")
    usage = index.usage(project_id)
    if usage != Usage(stored_sum, logical_sum):
        report.mismatches.append(
            f"{project_id} usage {usage} differs from the chunks' {Usage(stored_sum, logical_sum)}"
        )
    # Sweep the store.
    garbage = set(index.garbage(project_id))
    present: set[str] = set()
    for name in store.list(layout.chunks_prefix(project_id)):
        try:
            blob = layout.parse_chunk_name(name)
        except ValueError:
            report.leaked.append(name)
            continue
        if rows.get(blob.chunk_id, (-1, False))[0] == blob.generation:
            present.add(blob.chunk_id)
        elif name not in garbage:
            report.leaked.append(name)
    for name in store.list(layout.manifests_prefix(project_id)):
        backup_id = name[len(layout.manifests_prefix(project_id)) :].split("/", 1)[0]
        # A manifest of an open backup may be on its way into the database.
        if name not in manifest_names and backups.get(backup_id) is None:
            report.leaked.append(name)
    live = set().union(*in_manifests.values()) if in_manifests else set()
    for chunk_id in sorted(live):
        generation, stored = rows.get(chunk_id, (-1, False))
        if generation < 0 or not stored:
            report.missing.append(f"{project_id} {chunk_id}: no stored row")
        elif chunk_id not in present:
            report.missing.append(f"{project_id} {chunk_id}: blob missing")
    if read_data:
        _read_all(store, project_id, project_keys, codec, rows, present, report, threads)


def _read_all(
    store: BlobStore,
    project_id: str,
    project_keys: keys.ProjectKeys,
    codec: envelope.Codec,
    rows: dict[str, tuple[int, bool]],
    present: set[str],
    report: CheckReport,
    threads: int,
) -> None:
    def verify(chunk_id: str) -> str | None:
        name = layout.chunk_name(project_id, chunk_id, rows[chunk_id][0])
        try:
            codec.open(project_keys, chunk_id, store.get(name))
        except BlobNotFound:
            return None  # removed by a sweep meanwhile
        except errors.IntegrityError as exc:
            return f"{project_id} {chunk_id}: {exc.reason}"
        return None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for problem in pool.map(verify, sorted(present)):
            if problem is not None:
                report.corrupt.append(problem)


def check_modes(store: BlobStore, under: str, report: CheckReport) -> None:
    """Add to `report` what of the store, from its root down to `under` and below, group or
    others may use; nothing on a store that keeps no files (memory, S3)."""
    modes = file_modes(store)
    if modes is not None:
        report.loose_modes.extend(modes.loose_modes(under))


def tighten(store: BlobStore, report: CheckReport) -> int:
    """Take group's and others' bits off what the report names; returns how many changed."""
    modes = file_modes(store)
    if modes is None:
        return 0
    return sum(modes.tighten_mode(loose.path) for loose in report.loose_modes)


def repair(index: ChunkIndex, store: BlobStore, report: CheckReport) -> int:
    """Delete the leaked blobs the report names, and nothing else; returns how many.

    Each is re-checked against the database just before: rows are created before their
    blob is put and generations are never reused, so a chunk blob whose (chunk,
    generation) has no row now can never be wanted again; likewise a manifest of a
    backup that has no row.
    """
    removed = 0
    for name in report.leaked:
        try:
            blob = layout.parse_chunk_name(name)
        except ValueError:
            blob = None
        if blob is not None:
            if index.has_chunk(blob.project_id, blob.chunk_id, blob.generation):
                continue
        else:
            parts = name.split("/")
            if (
                len(parts) >= 4
                and parts[2] == "manifests"
                and index.backup(parts[1], parts[3]) is not None
            ):
                continue
        store.delete(name)
        removed += 1
    return removed
