"""Validated tokens, remembered briefly (as Keystone's middleware caches them).

A busy client then costs no database round trip per call. A revocation through this
process takes effect at once (`forget`); one through another process within `seconds`.
"""

from __future__ import annotations

import collections
import threading

from csbs.domain.clock import Clock
from csbs.domain.identity import Principal

#: At most this many validated tokens are remembered (least recently used go first).
DEFAULT_SIZE = 10_000


class TokenCache:
    """token hash -> principal for `seconds` (0: remember nothing); safe across threads."""

    def __init__(self, clock: Clock, seconds: float, size: int = DEFAULT_SIZE) -> None:
        self._clock = clock
        self._seconds = seconds
        self._size = size
        self._entries: collections.OrderedDict[str, tuple[float, Principal]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        #: moves on every `forget`: a validation that read the database before it must not
        #: remember what it read
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read before reading a principal from the database; hand it to `put`."""
        return self._generation

    def get(self, token_hash: str) -> Principal | None:
        if self._seconds <= 0:
            return None
        with self._lock:
            hit = self._entries.get(token_hash)
            if hit is None:
                return None
            if hit[0] <= self._clock.monotonic():
                del self._entries[token_hash]
                return None
            return hit[1]

    def put(self, token_hash: str, principal: Principal, generation: int) -> None:
        """Remember `principal`, unless a `forget` happened since `generation` was read."""
        if self._seconds <= 0:
            return
        with self._lock:
            if generation != self._generation:
                return  # a revocation may have committed after this principal was read
            self._entries[token_hash] = (self._clock.monotonic() + self._seconds, principal)
            self._entries.move_to_end(token_hash)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def forget(self, token_hash: str) -> None:
        """After a revocation committed: drop the token and refuse validations in flight."""
        with self._lock:
            self._generation += 1
            self._entries.pop(token_hash, None)
