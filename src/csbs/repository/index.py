"""The repository's SQL: projects, the refcounted chunk index, reference batches, usage.
The SQL of reclamation (a deletion's steps, the sweep) is beside `reclaim.py`, in
`reclaim_index.py`.

Every statement that moves a refcount is one atomic `INSERT ... ON CONFLICT DO UPDATE`
or `UPDATE ... RETURNING` on the chunk's row, so on PostgreSQL concurrent writers,
deleters and sweepers of one project serialise only on the rows they share (row locks,
taken in chunk-id order within a transaction, so they cannot deadlock). On SQLite every
writing transaction holds the database's write lock (`BEGIN IMMEDIATE`). There is no
project-wide lock: the usage row is touched last, for the instant before commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from csbs.domain.clock import Clock
from csbs.repository import errors
from csbs.repository.schema import (
    repo_backup_refs,
    repo_backups,
    repo_chunks,
    repo_deployment,
    repo_manifests,
    repo_projects,
    repo_usage,
)
from csbs.sql import dialect, reads

_REF = struct.Struct("<32sI")  # raw chunk id, count

OPEN = "open"
SEALED = "sealed"
DELETING = "deleting"
#: Chunk references one deletion step releases in one transaction (batches are whole).
RELEASE_REFS = 2048

# Statements built once: building them per call (clause construction and cache-key
# generation) costs more CPU than the database's work (a deletion's are in reclaim_index).
_p: sa.BindParameter[str] = sa.bindparam("p", type_=sa.String())
_b: sa.BindParameter[str] = sa.bindparam("b", type_=sa.String())
_MANIFESTS_OF = (repo_manifests.c.project_id == _p, repo_manifests.c.backup_id == _b)
_USAGE = sa.select(repo_usage.c.stored_bytes, repo_usage.c.logical_bytes).where(
    repo_usage.c.project_id == _p
)
#: The project's usage moves by (`stored`, `logical`) bytes; also a deletion step's last write.
ADD_USAGE = (
    repo_usage.update()
    .where(repo_usage.c.project_id == _p)
    .values(
        stored_bytes=repo_usage.c.stored_bytes + sa.bindparam("stored", type_=sa.BigInteger()),
        logical_bytes=repo_usage.c.logical_bytes + sa.bindparam("logical", type_=sa.BigInteger()),
    )
)
_MANIFESTS_OF_BACKUP = (
    sa.select(repo_manifests).where(*_MANIFESTS_OF).order_by(repo_manifests.c.disk_id)
)


_NEXT_SEQ = (
    repo_backups.update()
    .where(
        repo_backups.c.project_id == _p,
        repo_backups.c.backup_id == _b,
        repo_backups.c.state == OPEN,
    )
    .values(next_seq=repo_backups.c.next_seq + 1)
    .returning(repo_backups.c.next_seq)
)
_STORED_IN = (
    repo_chunks.c.project_id == _p,
    repo_chunks.c.chunk_id.in_(sa.bindparam("cs", expanding=True)),
    repo_chunks.c.stored.is_(True),
)
_LOCK_STORED = (
    sa.select(repo_chunks.c.chunk_id)
    .where(*_STORED_IN)
    .order_by(repo_chunks.c.chunk_id)
    .with_for_update()
)
_ADD_REFS = (
    repo_chunks.update()
    .where(*_STORED_IN)
    .values(refcount=repo_chunks.c.refcount + sa.bindparam("n"), zero_since=None)
    .returning(repo_chunks.c.refcount, repo_chunks.c.stored_size, repo_chunks.c.logical_size)
)
#: Chunk ids in one `IN (...)` (SQLite's limit of bound values is far above).
_IN_LIMIT = 500


class _NotAllStored(Exception):
    """A chunk to reference has no stored row: roll the transaction back."""


_cs: sa.BindParameter[list[str]] = sa.bindparam("cs", expanding=True)
_LOCK_CHUNKS = (
    sa.select(repo_chunks.c.chunk_id)
    .where(repo_chunks.c.project_id == _p, repo_chunks.c.chunk_id.in_(_cs))
    .order_by(repo_chunks.c.chunk_id)
    .with_for_update()
)
_CHUNK_ROWS = sa.select(
    repo_chunks.c.chunk_id,
    repo_chunks.c.refcount,
    repo_chunks.c.stored,
    repo_chunks.c.generation,
    repo_chunks.c.base_id,
    repo_chunks.c.depth,
    repo_chunks.c.stored_size,
    repo_chunks.c.logical_size,
).where(repo_chunks.c.project_id == _p, repo_chunks.c.chunk_id.in_(_cs))
_SET_BASE = (
    repo_chunks.update()
    .where(
        repo_chunks.c.project_id == _p,
        repo_chunks.c.chunk_id == sa.bindparam("c"),
        repo_chunks.c.base_id.is_(None),
        repo_chunks.c.stored.is_(False),
    )
    .values(base_id=sa.bindparam("base"), depth=sa.bindparam("depth"))
)
_TAKE_BASE = (
    repo_chunks.update()
    .where(repo_chunks.c.project_id == _p, repo_chunks.c.chunk_id == sa.bindparam("c"))
    .values(refcount=repo_chunks.c.refcount + 1, zero_since=None)
)


@dataclasses.dataclass(frozen=True)
class ProjectRecord:
    """A project's repository row."""

    project_id: str
    wrapped_key: bytes
    chunk_size: int
    created_at: dt.datetime
    chunk_id_leaf: int | None = None  # keys.ProjectKeys's leaf_size


def _project_record(row: sa.Row[Any]) -> ProjectRecord:
    return ProjectRecord(
        row.project_id, row.wrapped_key, row.chunk_size, row.created_at, row.chunk_id_leaf
    )


@dataclasses.dataclass(frozen=True)
class Usage:
    """What a project's live backups hold: unique envelopes and their plaintext, in bytes."""

    stored_bytes: int
    logical_bytes: int


@dataclasses.dataclass(frozen=True)
class ChunkRef:
    """The answer to a reference: where the chunk lives and whether its blob is confirmed."""

    generation: int
    stored: bool


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """An upload that completed: chunk `chunk_id`, generation `generation`, envelope size."""

    chunk_id: str
    generation: int
    stored_size: int


@dataclasses.dataclass(frozen=True)
class ManifestRecord:
    """A complete disk of a backup."""

    backup_id: str
    disk_id: str
    manifest_id: str
    logical_size: int
    chunk_count: int


@dataclasses.dataclass(frozen=True)
class BackupRecord:
    """The repository's side of one backup."""

    backup_id: str
    state: str
    next_seq: int
    released_seq: int


def encode_refs(counts: Mapping[str, int]) -> bytes:
    """Encode chunk-id counts as sorted (32-byte id, uint32 count) records."""
    return b"".join(_REF.pack(bytes.fromhex(c), n) for c, n in sorted(counts.items()))


def decode_refs(blob: bytes) -> dict[str, int]:
    """Inverse of `encode_refs`."""
    return {raw.hex(): n for raw, n in _REF.iter_unpack(blob)}


class ChunkIndex:
    """The repository's tables, handed an engine, as writers, readers and the audit use
    them (`reclaim_index.ReclaimIndex` adds reclamation); safe to share between threads."""

    def __init__(self, engine: sa.Engine, clock: Clock) -> None:
        self._engine = engine
        self._reader = reads.reader(engine)
        self._clock = clock
        self._insert = dialect.insert(engine)
        self._is_postgres = dialect.is_postgres(engine)
        stmt = self._insert(repo_chunks).values(
            project_id=sa.bindparam("p"),
            chunk_id=sa.bindparam("c"),
            refcount=sa.bindparam("n"),
            stored_size=0,
            logical_size=sa.bindparam("ls"),
            generation=sa.bindparam("g"),
            stored=False,
            zero_since=None,
        )
        self._take = stmt.on_conflict_do_update(
            index_elements=[repo_chunks.c.project_id, repo_chunks.c.chunk_id],
            set_={
                "refcount": repo_chunks.c.refcount + stmt.excluded.refcount,
                "zero_since": None,
            },
        ).returning(
            repo_chunks.c.refcount,
            repo_chunks.c.generation,
            repo_chunks.c.stored,
            repo_chunks.c.stored_size,
            repo_chunks.c.logical_size,
        )
        self._confirm = (
            repo_chunks.update()
            .where(
                repo_chunks.c.project_id == sa.bindparam("p"),
                repo_chunks.c.chunk_id == sa.bindparam("c"),
                repo_chunks.c.generation == sa.bindparam("g"),
                repo_chunks.c.stored.is_(False),
            )
            .values(stored=True, stored_size=sa.bindparam("s"))
            .returning(repo_chunks.c.refcount)
        )

    # -- the deployment ---------------------------------------------------------------------

    def deployment_setting(self, name: str, proposed: str, *, replace: bool = False) -> str:
        """The deployment's value of a repository setting.

        The first caller records `proposed`; later callers read what was recorded, unless
        `replace` (an operator's change) overwrites it.
        """
        now = self._clock.now()
        stmt = self._insert(repo_deployment).values(name=name, value=proposed, recorded_at=now)
        with self._engine.begin() as conn:
            if replace:
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[repo_deployment.c.name],
                        set_={"value": proposed, "recorded_at": now},
                    )
                )
            else:
                conn.execute(stmt.on_conflict_do_nothing())
            value = conn.execute(
                sa.select(repo_deployment.c.value).where(repo_deployment.c.name == name)
            ).scalar_one()
        return str(value)

    def deployment_values(self) -> dict[str, str]:
        """Every recorded deployment value, by name (nothing is recorded by reading)."""
        with self._reader.begin() as conn:
            rows = conn.execute(sa.select(repo_deployment.c.name, repo_deployment.c.value))
            return {str(name): str(value) for name, value in rows}

    def forget_deployment_setting(self, name: str) -> None:
        """Remove a recorded value (a first start that could not finish recording)."""
        with self._engine.begin() as conn:
            conn.execute(repo_deployment.delete().where(repo_deployment.c.name == name))

    # -- projects ---------------------------------------------------------------------------

    def create_project(
        self, project_id: str, wrapped_key: bytes, chunk_size: int, chunk_id_leaf: int | None
    ) -> ProjectRecord:
        """Insert the project's row unless it exists; return the row that is stored."""
        now = self._clock.now()
        with self._engine.begin() as conn:
            conn.execute(
                self._insert(repo_projects)
                .values(
                    project_id=project_id,
                    wrapped_key=wrapped_key,
                    chunk_size=chunk_size,
                    chunk_id_leaf=chunk_id_leaf,
                    next_generation=1,
                    created_at=now,
                )
                .on_conflict_do_nothing()
            )
            conn.execute(
                self._insert(repo_usage)
                .values(project_id=project_id, stored_bytes=0, logical_bytes=0)
                .on_conflict_do_nothing()
            )
        found = self.get_project(project_id)
        assert found is not None
        return found

    def get_project(self, project_id: str) -> ProjectRecord | None:
        with self._reader.begin() as conn:
            row = conn.execute(
                sa.select(repo_projects).where(repo_projects.c.project_id == project_id)
            ).first()
        if row is None:
            return None
        return _project_record(row)

    def list_projects(self) -> list[ProjectRecord]:
        with self._reader.begin() as conn:
            rows = conn.execute(sa.select(repo_projects).order_by(repo_projects.c.project_id))
            return [_project_record(r) for r in rows]

    def set_wrapped_key(self, project_id: str, wrapped_key: bytes) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                repo_projects.update()
                .where(repo_projects.c.project_id == project_id)
                .values(wrapped_key=wrapped_key)
            )

    def reserve_generations(self, project_id: str, count: int) -> int:
        """Reserve `count` chunk generations; returns the first. A short transaction of its
        own, so the project row is never held while chunks are referenced."""
        with self._engine.begin() as conn:
            row = conn.execute(
                repo_projects.update()
                .where(repo_projects.c.project_id == project_id)
                .values(next_generation=repo_projects.c.next_generation + count)
                .returning(repo_projects.c.next_generation)
            ).first()
        if row is None:
            raise errors.RepositoryError(f"project {project_id} has no repository")
        return int(row[0]) - count

    def usage(self, project_id: str) -> Usage:
        with self._reader.begin() as conn:
            row = conn.execute(_USAGE, {"p": project_id}).first()
        return Usage(0, 0) if row is None else Usage(int(row[0]), int(row[1]))

    def _add_usage(self, conn: sa.Connection, project_id: str, stored: int, logical: int) -> None:
        # Last statement of its transaction: the row is locked only until the commit.
        if stored or logical:
            conn.execute(ADD_USAGE, {"p": project_id, "stored": stored, "logical": logical})

    # -- backups: writing -------------------------------------------------------------------

    def open_backup(self, project_id: str, backup_id: str) -> None:
        """Create the backup's row (state open), or check that an existing one is open."""
        with self._engine.begin() as conn:
            conn.execute(
                self._insert(repo_backups)
                .values(
                    project_id=project_id,
                    backup_id=backup_id,
                    state=OPEN,
                    next_seq=0,
                    released_seq=0,
                    created_at=self._clock.now(),
                )
                .on_conflict_do_nothing()
            )
            state = conn.execute(
                sa.select(repo_backups.c.state).where(
                    repo_backups.c.project_id == project_id, repo_backups.c.backup_id == backup_id
                )
            ).scalar_one()
        if state != OPEN:
            raise errors.RepositoryError(f"backup {backup_id} is {state}; it takes no more disks")

    def take_refs(
        self,
        project_id: str,
        backup_id: str,
        counts: Mapping[str, int],
        logical_sizes: Mapping[str, int],
        generations: Iterable[int],
        confirmations: Sequence[Confirmation] = (),
    ) -> dict[str, ChunkRef]:
        """Reference `counts` for the backup in one transaction, recording the batch.

        New chunks get a row (not yet stored) with a generation from `generations`.
        Also confirms `confirmations` (uploads completed since the last batch).
        """
        gens = iter(generations)
        result: dict[str, ChunkRef] = {}
        with self._engine.begin() as conn:
            # The backup row first: the batch number, and a lock a deletion also takes.
            seq = conn.execute(
                repo_backups.update()
                .where(
                    repo_backups.c.project_id == project_id,
                    repo_backups.c.backup_id == backup_id,
                    repo_backups.c.state == OPEN,
                )
                .values(next_seq=repo_backups.c.next_seq + 1)
                .returning(repo_backups.c.next_seq)
            ).scalar()
            if seq is None:
                raise errors.RepositoryError(f"backup {backup_id} is no longer open")
            stored_delta = logical_delta = 0
            confirming = {c.chunk_id: c for c in confirmations}
            # One pass in chunk-id order over confirmations and references together: every
            # transaction locks chunk rows in the same order, so none can deadlock.
            for chunk_id in sorted(confirming.keys() | counts.keys()):
                item = confirming.get(chunk_id)
                if item is not None:
                    stored_delta += self._confirm_one(conn, project_id, item)
                n = counts.get(chunk_id)
                if n is None:
                    continue
                row = conn.execute(
                    self._take,
                    {
                        "p": project_id,
                        "c": chunk_id,
                        "n": n,
                        "ls": logical_sizes[chunk_id],
                        "g": next(gens),
                    },
                ).one()
                if row.refcount == n:  # from zero (or new): it counts towards usage again
                    stored_delta += row.stored_size
                    logical_delta += row.logical_size
                result[chunk_id] = ChunkRef(int(row.generation), bool(row.stored))
            if counts:
                conn.execute(
                    repo_backup_refs.insert().values(
                        project_id=project_id,
                        backup_id=backup_id,
                        seq=seq - 1,
                        refs=encode_refs(counts),
                    )
                )
            self._add_usage(conn, project_id, stored_delta, logical_delta)
        return result

    def add_refs(
        self, project_id: str, backup_id: str, counts: Mapping[str, int], batch: int
    ) -> bool:
        """Reference `counts` for the backup, all in one transaction, recorded in batches
        of at most `batch` chunks, if every one of those chunks has a stored row; otherwise
        take nothing and return False. For chunks known to be stored (a disk that reuses an
        earlier backup's image): one statement per distinct count and few hundred chunks,
        not one per chunk."""
        ordered = sorted(counts)
        try:
            with self._engine.begin() as conn:
                for start in range(0, len(ordered), batch):
                    part = {c: counts[c] for c in ordered[start : start + batch]}
                    seq = conn.execute(_NEXT_SEQ, {"p": project_id, "b": backup_id}).scalar()
                    if seq is None:
                        raise errors.RepositoryError(f"backup {backup_id} is no longer open")
                    stored = logical = 0
                    for lo in range(0, len(part), _IN_LIMIT):
                        ids = list(part)[lo : lo + _IN_LIMIT]
                        if self._is_postgres:
                            # Rows locked in chunk-id order, as every writer locks them.
                            conn.execute(_LOCK_STORED, {"p": project_id, "cs": ids}).all()
                        by_count: dict[int, list[str]] = {}
                        for chunk_id in ids:
                            by_count.setdefault(part[chunk_id], []).append(chunk_id)
                        for n, chunk_ids in sorted(by_count.items()):
                            rows = conn.execute(
                                _ADD_REFS, {"p": project_id, "cs": chunk_ids, "n": n}
                            ).all()
                            if len(rows) != len(chunk_ids):
                                raise _NotAllStored()
                            for row in rows:
                                if row.refcount == n:  # from zero: counts towards usage again
                                    stored += row.stored_size
                                    logical += row.logical_size
                    conn.execute(
                        repo_backup_refs.insert().values(
                            project_id=project_id,
                            backup_id=backup_id,
                            seq=seq - 1,
                            refs=encode_refs(part),
                        )
                    )
                    self._add_usage(conn, project_id, stored, logical)
        except _NotAllStored:
            return False
        return True

    def _confirm_in(
        self, conn: sa.Connection, project_id: str, confirmations: Sequence[Confirmation]
    ) -> tuple[int, int]:
        stored = 0
        for item in sorted(confirmations, key=lambda c: c.chunk_id):
            stored += self._confirm_one(conn, project_id, item)
        return stored, 0

    def _confirm_one(self, conn: sa.Connection, project_id: str, item: Confirmation) -> int:
        """Mark one upload stored; returns the bytes it adds to usage."""
        refcount = conn.execute(
            self._confirm,
            {"p": project_id, "c": item.chunk_id, "g": item.generation, "s": item.stored_size},
        ).scalar()
        # Confirmed by us (not already by another writer), and live: its envelope counts.
        return item.stored_size if refcount else 0

    def confirm(self, project_id: str, confirmations: Sequence[Confirmation]) -> None:
        """Mark uploads as stored, in a transaction of their own."""
        if not confirmations:
            return
        with self._engine.begin() as conn:
            stored, logical = self._confirm_in(conn, project_id, confirmations)
            self._add_usage(conn, project_id, stored, logical)

    def attach_bases(
        self, project_id: str, wanted: Mapping[str, str], max_depth: int
    ) -> dict[str, tuple[str, int]]:
        """Let chunks not yet stored be stored as deltas: `wanted` maps a chunk to the base
        it would stand on. In one transaction, a chunk whose row is not stored and has no
        base takes the base (stored, of depth below `max_depth`): the row records it and
        the base gains one reference, held while the row exists. Returns, by chunk, the
        base and its generation for every chunk whose row now stands on the wanted base
        (attached now or before); any other chunk must be stored whole."""
        if not wanted:
            return {}
        ids = sorted(set(wanted) | set(wanted.values()))
        result: dict[str, tuple[str, int]] = {}
        with self._engine.begin() as conn:
            if dialect.is_postgres(conn.engine):
                # Chunk rows are locked in chunk-id order, as every writer locks them.
                conn.execute(_LOCK_CHUNKS, {"p": project_id, "cs": ids}).all()
            rows = {r.chunk_id: r for r in conn.execute(_CHUNK_ROWS, {"p": project_id, "cs": ids})}
            refcounts = {c: int(r.refcount) for c, r in rows.items()}
            stored = logical = 0
            for chunk_id in sorted(wanted):
                base_id = wanted[chunk_id]
                row, base = rows.get(chunk_id), rows.get(base_id)
                if row is None or base is None or base_id == chunk_id or not base.stored:
                    continue
                if row.base_id is not None:
                    if row.base_id == base_id:
                        result[chunk_id] = (base_id, int(base.generation))
                    continue
                if row.stored or int(base.depth) >= max_depth:
                    continue
                done = conn.execute(
                    _SET_BASE,
                    {"p": project_id, "c": chunk_id, "base": base_id, "depth": base.depth + 1},
                ).rowcount
                if not done:
                    continue
                conn.execute(_TAKE_BASE, {"p": project_id, "c": base_id})
                if refcounts[base_id] == 0:  # back from zero: it counts towards usage again
                    stored += int(base.stored_size)
                    logical += int(base.logical_size)
                refcounts[base_id] += 1
                result[chunk_id] = (base_id, int(base.generation))
            self._add_usage(conn, project_id, stored, logical)
        return result

    def add_manifest(
        self,
        project_id: str,
        record: ManifestRecord,
        confirmations: Sequence[Confirmation],
    ) -> None:
        """Confirm the last uploads and record the disk as complete, atomically."""
        with self._engine.begin() as conn:
            state = conn.execute(
                repo_backups.update()
                .where(
                    repo_backups.c.project_id == project_id,
                    repo_backups.c.backup_id == record.backup_id,
                    repo_backups.c.state == OPEN,
                )
                .values(state=OPEN)
                .returning(repo_backups.c.state)
            ).scalar()
            if state is None:
                raise errors.RepositoryError(f"backup {record.backup_id} is no longer open")
            stored, logical = self._confirm_in(conn, project_id, confirmations)
            conn.execute(
                repo_manifests.insert().values(
                    project_id=project_id,
                    backup_id=record.backup_id,
                    disk_id=record.disk_id,
                    manifest_id=record.manifest_id,
                    logical_size=record.logical_size,
                    chunk_count=record.chunk_count,
                    created_at=self._clock.now(),
                )
            )
            self._add_usage(conn, project_id, stored, logical)

    def seal_backup(self, project_id: str, backup_id: str) -> None:
        with self._engine.begin() as conn:
            done = conn.execute(
                repo_backups.update()
                .where(
                    repo_backups.c.project_id == project_id,
                    repo_backups.c.backup_id == backup_id,
                    repo_backups.c.state.in_([OPEN, SEALED]),
                )
                .values(state=SEALED)
            ).rowcount
        if not done:
            raise errors.RepositoryError(f"backup {backup_id} cannot be sealed")

    # -- reading ----------------------------------------------------------------------------

    def backup(self, project_id: str, backup_id: str) -> BackupRecord | None:
        with self._reader.begin() as conn:
            row = conn.execute(
                sa.select(repo_backups).where(
                    repo_backups.c.project_id == project_id, repo_backups.c.backup_id == backup_id
                )
            ).first()
        if row is None:
            return None
        return BackupRecord(row.backup_id, row.state, row.next_seq, row.released_seq)

    def backups(self, project_id: str) -> list[BackupRecord]:
        with self._reader.begin() as conn:
            rows = conn.execute(
                sa.select(repo_backups)
                .where(repo_backups.c.project_id == project_id)
                .order_by(repo_backups.c.backup_id)
            ).all()
        return [BackupRecord(r.backup_id, r.state, r.next_seq, r.released_seq) for r in rows]

    def manifests(self, project_id: str, backup_id: str | None = None) -> list[ManifestRecord]:
        with self._reader.begin() as conn:
            if backup_id is not None:
                rows = conn.execute(_MANIFESTS_OF_BACKUP, {"p": project_id, "b": backup_id}).all()
            else:
                rows = conn.execute(
                    sa.select(repo_manifests)
                    .where(repo_manifests.c.project_id == project_id)
                    .order_by(repo_manifests.c.backup_id, repo_manifests.c.disk_id)
                ).all()
        return [
            ManifestRecord(r.backup_id, r.disk_id, r.manifest_id, r.logical_size, r.chunk_count)
            for r in rows
        ]

    def generations(self, project_id: str, chunk_ids: Iterable[str]) -> dict[str, int]:
        """Return the generation of each chunk that has a stored blob."""
        wanted = sorted(set(chunk_ids))
        found: dict[str, int] = {}
        with self._reader.begin() as conn:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                for chunk_id, generation in conn.execute(
                    sa.select(repo_chunks.c.chunk_id, repo_chunks.c.generation).where(
                        repo_chunks.c.project_id == project_id,
                        repo_chunks.c.chunk_id.in_(part),
                        repo_chunks.c.stored.is_(True),
                    )
                ):
                    found[chunk_id] = int(generation)
        return found

    def has_chunk(self, project_id: str, chunk_id: str, generation: int) -> bool:
        """Tell whether the chunk has a row with this generation."""
        with self._reader.begin() as conn:
            return (
                conn.execute(
                    sa.select(repo_chunks.c.refcount).where(
                        repo_chunks.c.project_id == project_id,
                        repo_chunks.c.chunk_id == chunk_id,
                        repo_chunks.c.generation == generation,
                    )
                ).first()
                is not None
            )

    def chunk_rows(self, project_id: str) -> Iterable[Any]:
        """Every chunk row of the project (for the audit)."""
        with self._reader.begin() as conn:
            yield from conn.execute(
                sa.select(repo_chunks)
                .where(repo_chunks.c.project_id == project_id)
                .order_by(repo_chunks.c.chunk_id)
            )

    def ref_batches(self, project_id: str) -> Iterable[tuple[str, int, dict[str, int]]]:
        """Every unreleased reference batch: (backup id, seq, counts)."""
        with self._reader.begin() as conn:
            for backup_id, seq, blob in conn.execute(
                sa.select(
                    repo_backup_refs.c.backup_id, repo_backup_refs.c.seq, repo_backup_refs.c.refs
                ).where(repo_backup_refs.c.project_id == project_id)
            ):
                yield backup_id, seq, decode_refs(blob)
