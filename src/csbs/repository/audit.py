"""The audit: mark every reference from the manifests and reference batches, sweep the store.

Mark: each complete disk's manifest is read back and its chunk ids counted; each backup's
unreleased reference batches are summed. Then every chunk row must carry exactly the
batches' count, every sealed backup's batches must equal its manifests, every chunk a
manifest names must have a stored row whose blob exists, and usage must equal the sums
over live rows. A delta's row holds one reference on its base (`delta.py`): the counts
include them, every base must have a row, and the chunks a manifest needs are its own and
their bases, down each chain. Sweep: every chunk blob in the store must belong to a row
(or be waiting in the garbage list). With `read_data`, every stored chunk is read and
verified, a delta rebuilt over its bases. A chunk missing or corrupt is also reported
for each backup that stands on it, directly or through deltas (`affected`). On a
store of files (`FileModes`), every directory and file must be its owner's alone.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses

from csbs.blobstore import BlobNotFound, BlobStore, LooseMode, file_modes
from csbs.repository import delta, envelope, errors, keys, layout, manifest
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
    #: "project backup B: ..." for each backup that needs a missing or corrupt chunk.
    affected: list[str] = dataclasses.field(default_factory=list)
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
    bases: dict[str, str] = {}
    depths: dict[str, int] = {}
    stored_sum = logical_sum = 0
    all_rows = list(index.chunk_rows(project_id))
    for row in all_rows:
        if row.base_id is not None:
            bases[row.chunk_id] = row.base_id
            expected[row.base_id] += 1  # a delta's row holds its base
        depths[row.chunk_id] = int(row.depth)
    for row in all_rows:
        rows[row.chunk_id] = (int(row.generation), bool(row.stored))
        report.chunks += 1
        base_id = bases.get(row.chunk_id)
        if base_id is not None and base_id not in depths:
            report.mismatches.append(
                f"{project_id} chunk {row.chunk_id}: stands on {base_id}, which has no row"
            )
        else:
            want = 0 if base_id is None else depths[base_id] + 1
            if depths[row.chunk_id] != want or want > delta.MAX_DEPTH:
                report.mismatches.append(
                    f"{project_id} chunk {row.chunk_id}: depth {depths[row.chunk_id]}, not {want}"
                )
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
    direct = set().union(*in_manifests.values()) if in_manifests else set()
    live = {c for chunk_id in direct for c in _chain(chunk_id, bases)}
    bad: dict[str, str] = {}  # chunk -> what is wrong with it
    for chunk_id in sorted(live):
        generation, stored = rows.get(chunk_id, (-1, False))
        if generation < 0 or not stored:
            report.missing.append(f"{project_id} {chunk_id}: no stored row")
            bad[chunk_id] = "missing"
        elif chunk_id not in present:
            report.missing.append(f"{project_id} {chunk_id}: blob missing")
            bad[chunk_id] = "missing"
    if read_data:
        fetcher = delta.ChunkFetcher(store, project_id, project_keys, codec)
        _read_all(fetcher, project_id, rows, present, report, threads, bad)
    # Each backup that needs a bad chunk, itself or as the base of one of its deltas.
    for backup_id, chunk_counts in sorted(in_manifests.items()):
        hits: dict[str, str] = {}
        for chunk_id in chunk_counts:
            for link in _chain(chunk_id, bases):
                if link in bad:
                    how = "" if link == chunk_id else f" (the base of {chunk_id})"
                    hits.setdefault(link, f"{bad[link]}{how}")
        for chunk_id, what in sorted(hits.items()):
            report.affected.append(f"{project_id} backup {backup_id}: chunk {chunk_id} {what}")


def _chain(chunk_id: str, bases: dict[str, str]) -> list[str]:
    """The chunk and the bases it stands on, down to a whole chunk (bounded)."""
    chain = [chunk_id]
    while chain[-1] in bases and len(chain) <= delta.MAX_DEPTH:
        chain.append(bases[chain[-1]])
    return chain


def _read_all(
    fetcher: delta.ChunkFetcher,
    project_id: str,
    rows: dict[str, tuple[int, bool]],
    present: set[str],
    report: CheckReport,
    threads: int,
    bad: dict[str, str],
) -> None:
    def verify(chunk_id: str) -> tuple[str, errors.IntegrityError] | None:
        try:
            fetcher.fetch(chunk_id, rows[chunk_id][0])
        except errors.ChunkNotFound:
            return None  # removed by a sweep meanwhile (or a base missing: marked above)
        except errors.IntegrityError as exc:
            return chunk_id, exc
        return None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for problem in pool.map(verify, sorted(present)):
            if problem is None:
                continue
            chunk_id, exc = problem
            # A delta over a bad base is reported once, as the base: its own blob is sound.
            if exc.root == chunk_id:
                report.corrupt.append(f"{project_id} {chunk_id}: {exc.reason}")
                bad[chunk_id] = "corrupt"
            elif exc.root not in bad:
                bad[exc.root] = "corrupt"


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
