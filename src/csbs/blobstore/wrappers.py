"""Stores that wrap another store to add one behaviour: retries, read-only access."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from csbs.blobstore import base, errors

T = TypeVar("T")


class RetryingStore:
    """Retries operations that fail with `StoreUnavailable`, with exponential back-off.

    Attempt `n` (from 1) that fails waits `min(max_delay, base_delay * 2**(n-1))`, scaled
    by a random factor in [0.5, 1] so that many workers do not retry in lock-step, then
    tries again, up to `attempts` tries in all; the last `StoreUnavailable` then
    propagates. Other errors (not found, invalid name, ...) are never retried.

    Every operation is safe to repeat: put overwrites atomically, delete is idempotent.
    `list` is retried only until it yields its first name: after that, restarting
    would repeat names, so a failure mid-listing propagates and the caller restarts.
    """

    def __init__(
        self,
        inner: base.BlobStore,
        attempts: int = 5,
        base_delay: float = 0.2,  # seconds
        *,
        max_delay: float = 10.0,  # seconds
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()

    def _call(self, operation: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except errors.StoreUnavailable:
                if attempt == self.attempts:
                    raise
                self._sleep(self._delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int) -> float:
        delay = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return delay * (0.5 + 0.5 * self._rng.random())

    def put(self, name: str, data: base.BlobValue) -> None:
        self._call(lambda: self.inner.put(name, data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(lambda: self.inner.get(name, offset, length))

    def exists(self, name: str) -> bool:
        return self._call(lambda: self.inner.exists(name))

    def delete(self, name: str) -> None:
        self._call(lambda: self.inner.delete(name))

    def list(self, prefix: str) -> Iterator[str]:
        base.validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[str]:
        def first() -> tuple[Iterator[str], str | None]:
            names = self.inner.list(prefix)
            return names, next(names, None)

        names, name = self._call(first)
        while name is not None:
            yield name
            name = next(names, None)

    def size(self, name: str) -> int:
        return self._call(lambda: self.inner.size(name))

    def close(self) -> None:
        self.inner.close()

    # `FileModes`, passed on when the inner store has them (not retried: local only).

    def loose_modes(self, under: str = "") -> Iterator[base.LooseMode]:
        modes = base.file_modes(self.inner)
        return iter(()) if modes is None else modes.loose_modes(under)

    def tighten_mode(self, path: str) -> bool:
        modes = base.file_modes(self.inner)
        return False if modes is None else modes.tighten_mode(path)


class ReadOnlyStore:
    """Passes reads through and refuses `put` and `delete` with `StoreReadOnly`.

    For tools that must provably not change a repository (check, restore from a
    replica). Names are still validated, so errors match the writable store's. Modes of
    files are shown (`loose_modes`), not changed.
    """

    def __init__(self, inner: base.BlobStore) -> None:
        self.inner = inner

    def put(self, name: str, data: base.BlobValue) -> None:
        base.validate_name(name)
        raise errors.StoreReadOnly(f"cannot put {name!r}: the store is read-only")

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(name, offset, length)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def delete(self, name: str) -> None:
        base.validate_name(name)
        raise errors.StoreReadOnly(f"cannot delete {name!r}: the store is read-only")

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def size(self, name: str) -> int:
        return self.inner.size(name)

    def close(self) -> None:
        self.inner.close()

    def loose_modes(self, under: str = "") -> Iterator[base.LooseMode]:
        modes = base.file_modes(self.inner)
        return iter(()) if modes is None else modes.loose_modes(under)

    def tighten_mode(self, path: str) -> bool:
        raise errors.StoreReadOnly(f"cannot change the mode of {path!r}: the store is read-only")
