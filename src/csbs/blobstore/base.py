"""The BlobStore port: the guarantees every backend gives, and the blob naming rules."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from csbs.blobstore import errors
from csbs.blobstore.aligned import AlignedBlob

MAX_NAME_LENGTH = 1024  # characters; S3 keys may be 1024 bytes and names are ASCII

_SEGMENT_RE = re.compile(r"[a-z0-9._-]+")
# The last segment of a prefix may be partial, hence empty is allowed there.
_PREFIX_RE = re.compile(r"[a-z0-9._/-]*")

# What `put` stores: bytes, or a blob built in page-aligned memory (valid during the call).
BlobValue = bytes | bytearray | AlignedBlob


class BlobStore(Protocol):
    """Named, immutable-by-convention blobs.

    Every implementation must give these guarantees; `tests/blobstore/test_blobstore.py`
    checks them for each backend:

    - **Atomic put.** A reader (`get`, `size`, `exists`, `list`) sees either the previous
      state of a name or the complete new value, never a partial one. Overwriting an
      existing name is allowed and is just as atomic; with concurrent puts of one name,
      one complete value wins.
    - **Read-after-write.** Once `put` returns, every later call from any thread or
      process sees the blob (or a newer value); once `delete` returns, the blob is gone.
    - **Durability.** When `put` or `delete` returns, the change survives a crash of the
      process or of the machine (as far as the medium promises).
    - **No invented errors.** A missing blob raises `BlobNotFound`; a transient failure
      of the medium raises `StoreUnavailable` (callers may retry); a malformed name raises
      `InvalidBlobName`; nothing else escapes but `BlobStoreError` subclasses.
    - **Thread safety.** One store object may be used from many threads at once.

    Names follow `validate_name`. A name must not also be a directory-like prefix of
    another name (`a/b` and `a/b/c`): the local filesystem cannot hold both.
    """

    def put(self, name: str, data: BlobValue) -> None:
        """Store `data` under `name`, atomically replacing any previous value.

        `data` is read during the call only; an `AlignedBlob` may be reused afterwards."""
        ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the bytes `[offset, offset + length)` of the blob, clipped to its end.

        `length=None` means "to the end". An offset at or past the end gives `b""`.
        Raises `BlobNotFound` if the blob does not exist, `ValueError` for a negative
        offset or length.
        """
        ...

    def exists(self, name: str) -> bool:
        """Tell whether a blob is stored under `name`."""
        ...

    def delete(self, name: str) -> None:
        """Remove the blob; deleting a missing blob is not an error (idempotent)."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Yield, lazily, every name that starts with `prefix` (a plain string prefix).

        Order is unspecified but stable for an unchanged store. Blobs put or deleted
        while the iteration runs may or may not be seen. Never yields temporary or
        foreign entries that are not valid blob names.
        """
        ...

    def size(self, name: str) -> int:
        """Return the blob's length in bytes; raises `BlobNotFound` if missing."""
        ...

    def close(self) -> None:
        """Release connections and other resources; calling it twice is harmless."""
        ...


@dataclasses.dataclass(frozen=True)
class LooseMode:
    """A directory or file of a store that its owner's group or others may use."""

    #: Relative to the store's root, segments joined by `/`; `""` is the root itself.
    path: str
    #: Its permission bits (`stat.S_IMODE`).
    mode: int
    is_dir: bool


@runtime_checkable
class FileModes(Protocol):
    """What a store that keeps its blobs as files on a machine adds: their modes.

    Optional beside `BlobStore`: only a store whose directories and files other users of
    the machine could open implements it (the local store, and the wrappers pass it on);
    `file_modes` finds it. Such a store creates every directory 0700 and every file 0600,
    whatever the umask, since blobs hold wrapped keys and backed-up data.
    """

    def loose_modes(self, under: str = "") -> Iterator[LooseMode]:
        """Yield, lazily, each directory and regular file that group or others may use
        (any of the bits 0o077): the root, the directories from it down to `under` (a
        valid name; `""` is the root), and everything below `under`. Symbolic links and
        other special files are skipped, not followed."""
        ...

    def tighten_mode(self, path: str) -> bool:
        """Take group's and others' bits off the directory or file `path` (a
        `LooseMode.path`); False if it is gone, is neither, or had none."""
        ...


def file_modes(store: BlobStore) -> FileModes | None:
    """The store as `FileModes` if it keeps files with modes (also through a wrapper),
    else None (memory, S3)."""
    return store if isinstance(store, FileModes) else None


def validate_name(name: str) -> str:
    """Return `name` unchanged if it is a valid blob name, else raise `InvalidBlobName`.

    A valid name is a relative path of one or more lowercase ASCII segments made of
    `[a-z0-9._-]`, joined by `/`, with no empty, `.` or `..` segment, at most
    `MAX_NAME_LENGTH` characters long. These rules make every name a safe relative file
    path and a portable object key, and leave characters free (e.g. `~`) for a backend's
    temporary files.
    """
    if not isinstance(name, str):
        raise errors.InvalidBlobName(repr(name), "not a string")
    if not name:
        raise errors.InvalidBlobName(name, "empty")
    if len(name) > MAX_NAME_LENGTH:
        raise errors.InvalidBlobName(name, f"longer than {MAX_NAME_LENGTH} characters")
    for segment in name.split("/"):
        _check_segment(name, segment)
    return name


def validate_prefix(prefix: str) -> str:
    """Return `prefix` unchanged if it can start a valid name, else raise `InvalidBlobName`.

    `""` (everything) is valid. Every complete segment (followed by `/`) obeys the
    `validate_name` rules; the last segment may be partial or empty.
    """
    if not isinstance(prefix, str):
        raise errors.InvalidBlobName(repr(prefix), "not a string")
    if len(prefix) > MAX_NAME_LENGTH:
        raise errors.InvalidBlobName(prefix, f"longer than {MAX_NAME_LENGTH} characters")
    if not _PREFIX_RE.fullmatch(prefix):
        raise errors.InvalidBlobName(prefix, "only [a-z0-9._-] and '/' are allowed")
    *complete, _partial = prefix.split("/")
    for segment in complete:
        _check_segment(prefix, segment)
    return prefix


def _check_segment(name: str, segment: str) -> None:
    if not segment:
        raise errors.InvalidBlobName(name, "empty path segment")
    if segment in (".", ".."):
        raise errors.InvalidBlobName(name, f"segment {segment!r} is not allowed")
    if not _SEGMENT_RE.fullmatch(segment):
        raise errors.InvalidBlobName(name, "only [a-z0-9._-] and '/' are allowed")


def is_valid_name(name: str) -> bool:
    """Tell whether `name` passes `validate_name`, without raising."""
    try:
        validate_name(name)
    except errors.InvalidBlobName:
        return False
    return True


def check_range(offset: int, length: int | None) -> None:
    """Raise `ValueError` unless `offset` and `length` can describe a byte range."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if length is not None and length < 0:
        raise ValueError(f"length must be >= 0 or None, got {length}")
