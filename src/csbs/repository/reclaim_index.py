"""The repository index's SQL of space reclamation: a deletion's steps and the sweep's.

`ReclaimIndex` is the chunk index (`index.ChunkIndex`) with these statements, and is what a
`Repository` holds; `reclaim.py` drives them. A deletion marks its backup deleting, releases
its reference batches a step at a time (the cursor moves in the same transaction as the
decrements) and forgets it; the sweep deletes the rows of chunks at refcount zero, their
blob names going to the garbage list in the same transaction.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from csbs.domain.clock import Clock
from csbs.repository import errors
from csbs.repository.index import (
    ADD_USAGE,
    DELETING,
    BackupRecord,
    ChunkIndex,
    Usage,
    decode_refs,
)
from csbs.repository.schema import (
    repo_backup_refs,
    repo_backups,
    repo_chunks,
    repo_garbage,
    repo_manifests,
)
from csbs.sql import dialect

# Statements every deletion runs, built once: building them per call (clause construction
# and cache-key generation) cost the deletion task more CPU than the database did.
_p: sa.BindParameter[str] = sa.bindparam("p", type_=sa.String())
_b: sa.BindParameter[str] = sa.bindparam("b", type_=sa.String())
_OF_BACKUP = (repo_backups.c.project_id == _p, repo_backups.c.backup_id == _b)
_REFS_OF_BACKUP = (repo_backup_refs.c.project_id == _p, repo_backup_refs.c.backup_id == _b)
_MANIFESTS_OF = (repo_manifests.c.project_id == _p, repo_manifests.c.backup_id == _b)
_START_DELETE = (
    repo_backups.update()
    .where(*_OF_BACKUP)
    .values(state=DELETING)
    .returning(repo_backups.c.next_seq, repo_backups.c.released_seq)
)
_CURSOR_FOR_UPDATE = (
    sa.select(repo_backups.c.next_seq, repo_backups.c.released_seq)
    .where(*_OF_BACKUP)
    .with_for_update()
)
_STEP_REFS = (
    sa.select(repo_backup_refs.c.seq, repo_backup_refs.c.refs)
    .where(
        *_REFS_OF_BACKUP,
        repo_backup_refs.c.seq >= sa.bindparam("first"),
        repo_backup_refs.c.seq < sa.bindparam("next"),
    )
    .order_by(repo_backup_refs.c.seq)
    .limit(sa.bindparam("limit", type_=sa.Integer()))
)
_DROP_STEP_REFS = repo_backup_refs.delete().where(
    *_REFS_OF_BACKUP,
    repo_backup_refs.c.seq >= sa.bindparam("first"),
    repo_backup_refs.c.seq < sa.bindparam("end"),
)
_MOVE_CURSOR = repo_backups.update().where(*_OF_BACKUP).values(released_seq=sa.bindparam("end"))
_FORGET_MANIFESTS = repo_manifests.delete().where(*_MANIFESTS_OF)
_FORGET_BACKUP = repo_backups.delete().where(
    *_OF_BACKUP, repo_backups.c.released_seq >= repo_backups.c.next_seq
)
# PostgreSQL runs the data-modifying statements of a WITH clause as part of the statement,
# so writes that commit together can go as one statement: one round trip, and in autocommit
# mode none for BEGIN and COMMIT. SQLite runs them one by one in a transaction.
_END_STEP = _MOVE_CURSOR.add_cte(_DROP_STEP_REFS.cte("dropped"))
_END_STEP_WITH_USAGE = ADD_USAGE.add_cte(_DROP_STEP_REFS.cte("dropped")).add_cte(
    _MOVE_CURSOR.cte("moved")
)
_FORGET = _FORGET_BACKUP.add_cte(_FORGET_MANIFESTS.cte("manifests"))
_PENDING_SWEEP = sa.select(
    sa.func.count(), sa.func.coalesce(sa.func.sum(repo_chunks.c.stored_size), 0)
).where(repo_chunks.c.project_id == _p, repo_chunks.c.refcount == 0)
_SWEEP_CANDIDATES = (
    sa.select(repo_chunks.c.chunk_id, repo_chunks.c.generation)
    .where(
        repo_chunks.c.project_id == _p,
        repo_chunks.c.refcount == 0,
        repo_chunks.c.zero_since <= sa.bindparam("cutoff"),
    )
    .order_by(repo_chunks.c.chunk_id)
    .limit(sa.bindparam("limit", type_=sa.Integer()))
)
_GARBAGE = sa.select(repo_garbage.c.name).where(repo_garbage.c.project_id == _p)
_PENDING_RELEASE = sa.select(
    sa.func.count(),
    sa.func.coalesce(sa.func.sum(repo_chunks.c.stored_size), 0),
    sa.func.min(repo_chunks.c.zero_since),
    sa.func.max(repo_chunks.c.zero_since),
).where(repo_chunks.c.project_id == _p, repo_chunks.c.refcount == 0)
_SWEEP_DUE = sa.select(
    sa.exists().where(
        repo_chunks.c.project_id == _p,
        repo_chunks.c.refcount == 0,
        repo_chunks.c.zero_since <= sa.bindparam("cutoff"),
    ),
    sa.exists().where(repo_garbage.c.project_id == _p),
)


@dataclasses.dataclass(frozen=True)
class PendingRelease:
    """A project's chunks at refcount zero, whose space the sweep releases after the grace:
    how many, their stored bytes, and when the first and the last dropped to zero."""

    chunks: int
    stored_bytes: int
    oldest: dt.datetime | None
    newest: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class ReleaseStep:
    """One step of a deletion: reference batches released so far and in all, and the bytes
    of the chunks this step dropped to zero (what the project's usage went down by)."""

    released: int
    total: int
    freed: Usage


class ReclaimIndex(ChunkIndex):
    """The chunk index with the statements of reclamation; safe to share between threads."""

    def __init__(self, engine: sa.Engine, clock: Clock) -> None:
        super().__init__(engine, clock)
        self.is_postgres = dialect.is_postgres(engine)
        # A write that is one statement: its own transaction on PostgreSQL (one round trip
        # instead of three); a transaction as any other on SQLite.
        self._one_statement = dialect.one_statement(engine)
        new_count = repo_chunks.c.refcount - sa.bindparam("n")
        self._decrement = (
            repo_chunks.update()
            .where(
                repo_chunks.c.project_id == sa.bindparam("p"),
                repo_chunks.c.chunk_id.in_(sa.bindparam("cs", expanding=True)),
            )
            .values(
                refcount=new_count,
                zero_since=sa.case((new_count == 0, sa.bindparam("now")), else_=None),
            )
            .returning(
                repo_chunks.c.chunk_id,
                repo_chunks.c.refcount,
                repo_chunks.c.stored_size,
                repo_chunks.c.logical_size,
            )
        )
        self._lock_chunks = (
            sa.select(repo_chunks.c.chunk_id)
            .where(
                repo_chunks.c.project_id == sa.bindparam("p"),
                repo_chunks.c.chunk_id.in_(sa.bindparam("cs", expanding=True)),
            )
            .order_by(repo_chunks.c.chunk_id)
            .with_for_update()
        )

    # -- deletion ---------------------------------------------------------------------------

    def start_delete(self, project_id: str, backup_id: str) -> BackupRecord | None:
        """Mark the backup as deleting (no disk can be added any more); None if gone."""
        with self._one_statement.begin() as conn:
            row = conn.execute(_START_DELETE, {"p": project_id, "b": backup_id}).first()
        if row is None:
            return None
        return BackupRecord(backup_id, DELETING, int(row[0]), int(row[1]))

    def release_next(self, project_id: str, backup_id: str, max_refs: int) -> ReleaseStep | None:
        """Release the backup's next reference batches, as many as fit in `max_refs` chunk
        references (at least one batch); None when all are released. The cursor moves in
        the same transaction as the decrements, so a crash either keeps or undoes the whole
        step."""
        now = self._clock.now()
        of_backup = {"p": project_id, "b": backup_id}
        with self._engine.begin() as conn:
            row = conn.execute(_CURSOR_FOR_UPDATE, of_backup).first()
            if row is None or row.released_seq >= row.next_seq:
                return None
            first = int(row.released_seq)
            counts, end = self._step_refs(
                conn, project_id, backup_id, first, int(row.next_seq), max_refs
            )
            stored, logical = self._release(conn, project_id, backup_id, counts, now)
            step = {**of_backup, "first": first, "end": end}
            if not self.is_postgres:
                conn.execute(_DROP_STEP_REFS, step)
                conn.execute(_MOVE_CURSOR, step)
                self._add_usage(conn, project_id, -stored, -logical)
            elif stored or logical:
                # The usage row is updated last: it stays locked only until the commit.
                conn.execute(_END_STEP_WITH_USAGE, {**step, "stored": -stored, "logical": -logical})
            else:
                conn.execute(_END_STEP, step)
        return ReleaseStep(end, int(row.next_seq), Usage(stored, logical))

    def _step_refs(
        self,
        conn: sa.Connection,
        project_id: str,
        backup_id: str,
        first: int,
        next_seq: int,
        max_refs: int,
    ) -> tuple[collections.Counter[str], int]:
        """The references of the batches from `first` on, whole, until `max_refs` (at least
        one batch), summed per chunk; and the seq after the last batch taken."""
        counts: collections.Counter[str] = collections.Counter()
        end = first + 1  # also when the first batch recorded nothing
        taken = batches = 0
        rows = conn.execute(
            _STEP_REFS,
            {
                "p": project_id,
                "b": backup_id,
                "first": first,
                "next": next_seq,
                "limit": max(1, max_refs // 2),
            },
        )
        for seq, blob in rows:
            refs = decode_refs(blob or b"")
            if batches and taken + len(refs) > max_refs:
                break
            counts.update(refs)
            taken += len(refs)
            batches += 1
            end = int(seq) + 1
        return counts, end

    def _release(
        self,
        conn: sa.Connection,
        project_id: str,
        backup_id: str,
        counts: Mapping[str, int],
        now: dt.datetime,
    ) -> tuple[int, int]:
        """Decrement the chunks of `counts`; returns the (stored, logical) bytes of those
        that dropped to zero."""
        # Lock the rows in chunk id order, as everything else that locks chunk rows does
        # (an UPDATE ... IN locks in scan order: deadlocks with writers); then one
        # statement per distinct count (almost always just n = 1).
        ordered = sorted(counts)
        if self.is_postgres and ordered:
            conn.execute(self._lock_chunks, {"p": project_id, "cs": ordered}).all()
        by_count: dict[int, list[str]] = collections.defaultdict(list)
        for chunk_id in ordered:
            by_count[counts[chunk_id]].append(chunk_id)
        stored = logical = 0
        for n, chunk_ids in sorted(by_count.items()):
            rows = conn.execute(
                self._decrement, {"p": project_id, "cs": chunk_ids, "n": n, "now": now}
            ).all()
            if len(rows) != len(chunk_ids):
                missing = set(chunk_ids) - {r.chunk_id for r in rows}
                raise errors.RepositoryError(
                    f"chunks referenced by backup {backup_id} are not in the index: "
                    f"{sorted(missing)[:5]}"
                )
            for left in rows:
                if left.refcount < 0:
                    raise errors.RepositoryError(f"refcount of chunk {left.chunk_id} below zero")
                if left.refcount == 0:
                    stored += left.stored_size
                    logical += left.logical_size
        return stored, logical

    def finish_delete(self, project_id: str, backup_id: str) -> None:
        """Forget the backup once all its batches are released and its manifests deleted."""
        of_backup = {"p": project_id, "b": backup_id}
        if self.is_postgres:
            with self._one_statement.begin() as conn:
                conn.execute(_FORGET, of_backup)
            return
        with self._engine.begin() as conn:
            conn.execute(_FORGET_MANIFESTS, of_backup)
            conn.execute(_FORGET_BACKUP, of_backup)

    # -- sweep ------------------------------------------------------------------------------

    def sweep_candidates(
        self, project_id: str, cutoff: dt.datetime, limit: int
    ) -> list[tuple[str, int]]:
        with self._reader.begin() as conn:
            return [
                (c, int(g))
                for c, g in conn.execute(
                    _SWEEP_CANDIDATES, {"p": project_id, "cutoff": cutoff, "limit": limit}
                )
            ]

    def pending_sweep(self, project_id: str) -> tuple[int, int]:
        """(chunks, stored bytes) at refcount zero, waiting for the sweep."""
        with self._reader.begin() as conn:
            row = conn.execute(_PENDING_SWEEP, {"p": project_id}).one()
        return int(row[0]), int(row[1])

    def pending_release(self, project_id: str) -> PendingRelease:
        with self._reader.begin() as conn:
            row = conn.execute(_PENDING_RELEASE, {"p": project_id}).one()
        return PendingRelease(int(row[0]), int(row[1]), row[2], row[3])

    def sweep_due(self, project_id: str, cutoff: dt.datetime) -> bool:
        """Whether a sweep now would remove something: a chunk at zero since `cutoff` or
        before, or a blob name left in the garbage list."""
        with self._reader.begin() as conn:
            row = conn.execute(_SWEEP_DUE, {"p": project_id, "cutoff": cutoff}).one()
        return bool(row[0]) or bool(row[1])

    def remove_chunks(
        self, project_id: str, candidates: Sequence[tuple[str, int]], names: Mapping[str, str]
    ) -> list[tuple[str, int, int]]:
        """Delete the rows still at zero (same generation); their blob names go to the
        garbage list in the same transaction. Returns (chunk, generation, stored size)."""
        removed: list[tuple[str, int, int]] = []
        with self._engine.begin() as conn:
            for chunk_id, generation in sorted(candidates):
                size = conn.execute(
                    repo_chunks.delete()
                    .where(
                        repo_chunks.c.project_id == project_id,
                        repo_chunks.c.chunk_id == chunk_id,
                        repo_chunks.c.generation == generation,
                        repo_chunks.c.refcount == 0,
                    )
                    .returning(repo_chunks.c.stored_size)
                ).scalar()
                if size is not None:
                    removed.append((chunk_id, generation, int(size)))
                    conn.execute(
                        self._insert(repo_garbage)
                        .values(project_id=project_id, name=names[chunk_id])
                        .on_conflict_do_nothing()
                    )
        return removed

    def garbage(self, project_id: str) -> list[str]:
        """Blob names of chunk rows already removed, waiting for the sweep to delete the blobs."""
        with self._reader.begin() as conn:
            return list(conn.execute(_GARBAGE, {"p": project_id}).scalars())

    def forget_garbage(self, project_id: str, names: Sequence[str]) -> None:
        if not names:
            return
        with self._engine.begin() as conn:
            conn.execute(
                repo_garbage.delete().where(
                    repo_garbage.c.project_id == project_id, repo_garbage.c.name.in_(names)
                )
            )
