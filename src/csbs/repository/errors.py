"""The repository's error tree.

RepositoryError
├── ChunkNotFound       a referenced chunk is not in the store
├── IntegrityError      stored data failed verification (tampering, corruption, bug)
├── InvalidManifest     a manifest's encoding is malformed
├── InvalidKeyMaterial  a key given by an operator is malformed
└── WrongKey            a wrapped key does not open with this master key / project
"""

from __future__ import annotations


class RepositoryError(Exception):
    """Repository operation failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        super().__init__(self.message)


class ChunkNotFound(RepositoryError):
    """Chunk not found."""

    def __init__(self, chunk_id: str) -> None:
        self.chunk_id = chunk_id
        super().__init__(f"chunk {chunk_id} not found")


class IntegrityError(RepositoryError):
    """Stored data failed verification.

    Deliberately NOT a subclass of ChunkNotFound (nor of any "not found" error): a chunk
    that is present but wrong must never be handled like a missing one (e.g. re-uploaded
    or skipped by an `except ChunkNotFound`); it has to surface loudly.
    """

    def __init__(self, chunk_id: str, reason: str, root: str | None = None) -> None:
        self.chunk_id = chunk_id
        self.reason = reason
        #: The chunk whose blob is at fault: `chunk_id`, or a base a delta stands on.
        self.root = root or chunk_id
        super().__init__(f"integrity error in chunk {chunk_id}: {reason}")


class InvalidManifest(RepositoryError):
    """Malformed manifest."""


class InvalidKeyMaterial(RepositoryError):
    """Malformed key material."""


class WrongKey(RepositoryError):
    """The key does not match: wrong master key, wrong project, or altered key data.

    Not a subclass of the built-in KeyError (which `except KeyError` around dict lookups
    would swallow).
    """


class Cancelled(RepositoryError):
    """The operation was cancelled by its caller."""


class ImageDigestMismatch(RepositoryError):
    """A restored image does not hash to the digest its manifest recorded."""

    def __init__(self, backup_id: str, disk_id: str) -> None:
        self.backup_id = backup_id
        self.disk_id = disk_id
        super().__init__(
            f"restored image of disk {disk_id} in backup {backup_id} does not match its digest"
        )
