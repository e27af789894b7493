"""The deduplicating repository's pure parts: keys, chunk envelopes, manifests, chunking.

Nothing here touches the metadata database. Chunk ids are keyed BLAKE3 of the
plaintext, every stored chunk is a verified envelope (zstd + AES-256-GCM), a manifest
lists a disk image's chunks and holes in order, and `layout` names it all in a blob
store.
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
    "RepositoryError",
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
