"""Named, immutable blobs on a local filesystem, S3-compatible storage, or in memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csbs.blobstore.base import (
    BlobStore,
    FileModes,
    LooseMode,
    file_modes,
    validate_name,
    validate_prefix,
)
from csbs.blobstore.errors import (
    BlobNotFound,
    BlobStoreError,
    InvalidBlobName,
    InvalidStoreUrl,
    StoreReadOnly,
    StoreUnavailable,
)
from csbs.blobstore.local import LocalStore
from csbs.blobstore.memory import MemoryStore
from csbs.blobstore.registry import open_store, register_scheme
from csbs.blobstore.wrappers import ReadOnlyStore, RetryingStore

if TYPE_CHECKING:
    from csbs.blobstore.s3 import S3Store

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "FileModes",
    "InvalidBlobName",
    "InvalidStoreUrl",
    "LocalStore",
    "LooseMode",
    "MemoryStore",
    "ReadOnlyStore",
    "RetryingStore",
    "S3Store",
    "StoreReadOnly",
    "StoreUnavailable",
    "file_modes",
    "open_store",
    "register_scheme",
    "validate_name",
    "validate_prefix",
]


def __getattr__(name: str) -> Any:
    # S3Store is loaded on first use: importing boto3 is slow and rarely needed.
    if name == "S3Store":
        from csbs.blobstore.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
