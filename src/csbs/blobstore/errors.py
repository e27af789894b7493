"""The blob store's error tree; adapters translate their backends' failures into it.

    BlobStoreError
    ├── BlobNotFound        the named blob does not exist
    ├── InvalidBlobName     the name breaks the naming rules (a caller bug)
    ├── InvalidStoreUrl     a store URL cannot be understood
    ├── StoreReadOnly       a write was attempted on a read-only store
    └── StoreUnavailable    transient failure (throttling, 5xx, network); retrying may succeed

Anything else a backend raises is a bug in that backend: each adapter converts every
expected failure of its library into one of these, raised `from` the original, so the
precise cause stays available as `__cause__`.
"""

from __future__ import annotations


class BlobStoreError(Exception):
    """Blob store operation failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        super().__init__(self.message)


class BlobNotFound(BlobStoreError):
    """Blob not found."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"blob not found: {name!r}")


class InvalidBlobName(BlobStoreError):
    """Invalid blob name."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"invalid blob name {name[:80]!r}: {reason}")


class InvalidStoreUrl(BlobStoreError):
    """Invalid blob store URL."""


class StoreReadOnly(BlobStoreError):
    """The blob store is read-only."""


class StoreUnavailable(BlobStoreError):
    """The blob store is temporarily unavailable; retrying may succeed."""
