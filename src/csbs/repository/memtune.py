"""glibc malloc tuning for the chunk pipelines, applied once per process where they start."""

from __future__ import annotations

import ctypes
import threading

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Each extra arena keeps its own free buffers; a few arenas bound what threads retain.
_ARENAS = 2
# Far above any chunk buffer, so freed 4 MiB buffers go back to malloc's free lists
# instead of being unmapped and faulted in again for the next chunk (which halves the
# envelope path's speed, see bench/primitives.py). Memory stays bounded: the pipelines
# hold a fixed number of buffers, which malloc then reuses.
_MMAP_THRESHOLD = 64 * 1024 * 1024  # bytes
# Free memory kept at the top of the heap: a few chunk buffers' worth, not more, since
# it counts towards the process's RSS.
_TRIM_THRESHOLD = 16 * 1024 * 1024  # bytes

_lock = threading.Lock()
_done: bool | None = None


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds; returns False where libc is not glibc."""
    global _done
    with _lock:
        if _done is None:
            _done = _apply()
        return _done


def _apply() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl, macOS, ...: nothing to tune
    return bool(
        mallopt(_M_ARENA_MAX, _ARENAS)
        and mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
