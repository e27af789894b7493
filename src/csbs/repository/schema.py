"""Tables of the repository's bookkeeping. The repository owns them; the migrations create them.

Invariants the code keeps, each in the transaction that changes the rows involved:

- `repo_chunks.refcount` = the sum of the counts in the `repo_backup_refs` batches of
  every backup that are not yet released (seq >= the backup's `released_seq`), plus the
  number of chunk rows whose `base_id` is this chunk (a delta holds its base while its
  row exists; `delta.py`).
- `repo_usage.stored_bytes` / `logical_bytes` = the sums of `stored_size` /
  `logical_size` over the project's chunk rows whose refcount is above zero.
- A chunk row exists before its blob is put, and is deleted before its blob is deleted
  (its name then waits in `repo_garbage`), so a blob without a row is a leak.
"""

from __future__ import annotations

import sqlalchemy as sa

from csbs.sql.types import UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: The deployment's repository settings that a project's repository takes when it is
#: created (`chunk_size`): recorded once, by the first process that sets up the
#: database, so every process creates projects alike whatever it was configured with.
repo_deployment = sa.Table(
    "repo_deployment",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
)

#: One row per project that has a repository: its wrapped data key and geometry.
repo_projects = sa.Table(
    "repo_projects",
    metadata,
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("chunk_size", sa.Integer, nullable=False),
    # The leaf of the project's tree chunk ids (keys.ProjectKeys); NULL: ids hash whole
    # chunks (projects created before decision 0027).
    sa.Column("chunk_id_leaf", sa.Integer, nullable=True),
    # Next free chunk generation; writers reserve blocks of them (see layout.chunk_name).
    sa.Column("next_generation", _BIG, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: The chunk index: one row per chunk the project holds (or is uploading).
repo_chunks = sa.Table(
    "repo_chunks",
    metadata,
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("refcount", _BIG, nullable=False),
    # Bytes of the envelope in the blob store; 0 until the upload is confirmed.
    sa.Column("stored_size", _BIG, nullable=False),
    sa.Column("logical_size", _BIG, nullable=False),
    sa.Column("generation", _BIG, nullable=False),
    # False while the first uploader has not confirmed the blob; writers that dedup
    # against such a row upload it too (same name), so no backup waits on another.
    sa.Column("stored", sa.Boolean, nullable=False),
    # When refcount last dropped to zero; the sweep removes the chunk after the grace.
    sa.Column("zero_since", UTCDateTime, nullable=True),
    # The chunk a delta blob stands on (None: stored whole); the row holds one reference
    # on it until the sweep removes the row. Set once, on a row not yet stored.
    sa.Column("base_id", sa.String(64), nullable=True),
    # Deltas between this chunk and a whole one: 0 for a whole chunk, base's depth + 1.
    sa.Column("depth", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_repo_chunks_zero", "project_id", "zero_since"),
)

#: One row per backup the repository has references for; the caller owns the backup
#: records, this is only the repository's side of them.
repo_backups = sa.Table(
    "repo_backups",
    metadata,
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("backup_id", sa.String(64), primary_key=True),
    # open: disks may still be added; sealed: complete; deleting: references being released.
    sa.Column("state", sa.String(16), nullable=False),
    # Reference batches written so far (seq 0 .. next_seq - 1).
    sa.Column("next_seq", sa.Integer, nullable=False),
    # Deletion cursor: batches below it are released. Moves in the same transaction as
    # the decrements, so a crashed deletion resumes exactly where it stopped.
    sa.Column("released_seq", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: The references a backup took, one row per batch, written in the same transaction as
#: the increments: a failed or crashed backup releases exactly these.
repo_backup_refs = sa.Table(
    "repo_backup_refs",
    metadata,
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("backup_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    # Sorted distinct chunk ids with their counts: 32-byte id + 4-byte count each.
    sa.Column("refs", sa.LargeBinary, nullable=False),
)

#: One row per disk of a backup whose manifest is stored (the disk is complete).
repo_manifests = sa.Table(
    "repo_manifests",
    metadata,
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("backup_id", sa.String(64), primary_key=True),
    sa.Column("disk_id", sa.String(64), primary_key=True),
    sa.Column("manifest_id", sa.String(64), nullable=False),
    sa.Column("logical_size", _BIG, nullable=False),
    sa.Column("chunk_count", _BIG, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: Per-project usage, kept exact by every transaction that moves a refcount across zero.
repo_usage = sa.Table(
    "repo_usage",
    metadata,
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("stored_bytes", _BIG, nullable=False),
    sa.Column("logical_bytes", _BIG, nullable=False),
)

#: Blob names whose chunk row the sweep has removed but whose blob may still exist.
repo_garbage = sa.Table(
    "repo_garbage",
    metadata,
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(1024), primary_key=True),
)
