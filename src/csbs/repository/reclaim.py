"""Space reclamation: delete a backup's references batch by batch, then sweep chunks at zero.

Deletion costs time proportional to the backup (one transaction per reference batch it
took), and moves its cursor in the same transaction as the decrements, so a deletion
that crashed or was cancelled resumes where it stopped and never counts twice. Usage is
exact at its end. The physical blobs of chunks that dropped to zero go away in `sweep`
after the grace period, which outlasts any upload still in flight for them; the
generation in each blob's name keeps a sweep from ever deleting a re-upload.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from csbs.blobstore import BlobStore
from csbs.domain.clock import Clock
from csbs.repository import errors, layout
from csbs.repository.index import Usage
from csbs.repository.reclaim_index import ReclaimIndex

_SWEEP_BATCH = 500


@dataclasses.dataclass(frozen=True)
class DeleteProgress:
    """Reference batches released so far, of all the backup took."""

    released: int
    total: int


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    """What a deletion did. The chunks it dropped to zero wait for the sweep
    (`ReclaimIndex.pending_sweep` counts them)."""

    existed: bool
    batches_released: int
    #: The bytes of the chunks this call dropped to zero: what the project's usage went
    #: down by (a resumed deletion counts only what it released itself).
    freed: Usage


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What one sweep removed."""

    chunks: int
    bytes: int
    garbage_blobs: int


def delete_backup(
    index: ReclaimIndex,
    store: BlobStore,
    project_id: str,
    backup_id: str,
    progress: Callable[[DeleteProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    *,
    release_refs: int,
) -> DeleteResult:
    """Release every reference of the backup and forget it; idempotent and resumable.

    Each step releases whole reference batches, up to `release_refs` chunk references, in
    one transaction."""
    record = index.start_delete(project_id, backup_id)
    released = stored = logical = 0
    if record is not None:
        while True:
            if cancel is not None and cancel():
                raise errors.Cancelled()
            step = index.release_next(project_id, backup_id, release_refs)
            if step is None:
                break
            released += 1
            stored += step.freed.stored_bytes
            logical += step.freed.logical_bytes
            if progress is not None:
                progress(DeleteProgress(step.released, step.total))
            if step.released >= step.total:
                # All released: no batch can be added once `start_delete` returned.
                break
        for manifest in index.manifests(project_id, backup_id):
            store.delete(layout.disk_manifest_name(project_id, backup_id, manifest.disk_id))
        index.finish_delete(project_id, backup_id)
    return DeleteResult(record is not None, released, Usage(stored, logical))


def sweep(
    index: ReclaimIndex, store: BlobStore, clock: Clock, grace: dt.timedelta, project_id: str
) -> SweepResult:
    """Remove chunks whose refcount has been zero for longer than `grace`."""
    garbage = index.garbage(project_id)
    for name in garbage:
        store.delete(name)
    index.forget_garbage(project_id, garbage)
    cutoff = clock.now() - grace
    chunks = size = 0
    while True:
        candidates = index.sweep_candidates(project_id, cutoff, _SWEEP_BATCH)
        if not candidates:
            break
        names = {c: layout.chunk_name(project_id, c, g) for c, g in candidates}
        removed = index.remove_chunks(project_id, candidates, names)
        gone = [names[c] for c, _, _ in removed]
        for name in gone:
            store.delete(name)
        index.forget_garbage(project_id, gone)
        chunks += len(removed)
        size += sum(s for _, _, s in removed)
        if not removed:
            break
        # Otherwise look again: a removed delta may have released its base, which is
        # then at zero since the delta was (`ReclaimIndex.remove_chunks`).
    return SweepResult(chunks, size, len(garbage))
