"""A dict-backed blob store: the reference fake, held to the same contract as the real ones."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from csbs.blobstore import base, errors


class MemoryStore:
    """Blobs in a dict guarded by a lock; thread-safe, lost when the process ends.

    `list` iterates over a snapshot taken when iteration starts, so it is stable and
    never sees a half-applied change.
    """

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, name: str, data: base.BlobValue) -> None:
        base.validate_name(name)
        # Copy: a caller handing in a bytes subclass or reusing a buffer must not be able
        # to change what is stored.
        value = bytes(data)
        with self._lock:
            self._blobs[name] = value

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        base.validate_name(name)
        base.check_range(offset, length)
        with self._lock:
            value = self._blobs.get(name)
        if value is None:
            raise errors.BlobNotFound(name)
        end = len(value) if length is None else offset + length
        return value[offset:end]

    def exists(self, name: str) -> bool:
        base.validate_name(name)
        with self._lock:
            return name in self._blobs

    def delete(self, name: str) -> None:
        base.validate_name(name)
        with self._lock:
            self._blobs.pop(name, None)

    def list(self, prefix: str) -> Iterator[str]:
        base.validate_prefix(prefix)
        with self._lock:
            names = sorted(n for n in self._blobs if n.startswith(prefix))
        return iter(names)

    def size(self, name: str) -> int:
        base.validate_name(name)
        with self._lock:
            value = self._blobs.get(name)
        if value is None:
            raise errors.BlobNotFound(name)
        return len(value)

    def close(self) -> None:
        pass
