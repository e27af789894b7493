"""The deduplicating chunk repository: `Repository` and its pure parts.

`Repository` (repository.py) keeps its bookkeeping in its own tables (schema.py, SQL in
index.py, reclamation's in reclaim_index.py) and drives the pipelines (writer.py,
reader.py), reclamation (reclaim.py) and the audit (audit.py). The pure parts touch no
database: chunk ids are keyed BLAKE3 of the plaintext, every stored chunk is a verified
envelope (zstd + AES-256-GCM), a manifest lists a disk image's chunks and holes in order,
and `layout` names it all in a blob store.
"""

from __future__ import annotations

from csbs.repository.chunking import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    iter_chunks,
    iter_runs,
)
from csbs.repository.envelope import Codec, open_, seal
from csbs.repository.errors import (
    ChunkNotFound,
    IntegrityError,
    InvalidKeyMaterial,
    InvalidManifest,
    RepositoryError,
    WrongKey,
)
from csbs.repository.index import Usage
from csbs.repository.keys import (
    ChunkId,
    ProjectKeys,
    generate_data_key,
    load_or_create_master_key,
    parse_master_key,
    unwrap_data_key,
    wrap_data_key,
)
from csbs.repository.manifest import ImageDigest, Manifest, ManifestBuilder
from csbs.repository.repository import Repository, RepositorySettings

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "ChunkId",
    "ChunkNotFound",
    "Codec",
    "ImageDigest",
    "IntegrityError",
    "InvalidKeyMaterial",
    "InvalidManifest",
    "Manifest",
    "ManifestBuilder",
    "ProjectKeys",
    "Repository",
    "RepositoryError",
    "RepositorySettings",
    "Usage",
    "WrongKey",
    "generate_data_key",
    "iter_chunks",
    "iter_runs",
    "load_or_create_master_key",
    "open_",
    "parse_master_key",
    "seal",
    "unwrap_data_key",
    "wrap_data_key",
]
