"""glibc malloc tuning for the chunk pipelines.

Applied once, at the start of every process that runs them, by its entry point: the
workers (`app.run_worker`: `csbs worker` and the worker child of `csbs serve`), `csbs repo
verify`, and the benchmarks' processes. Not in the API process, which runs no pipeline.

`release_free_memory()` gives what malloc keeps free back to the system; the pipelines call
it when a disk is done, so a worker does not carry one task's free heap into the next (the
peak of a restore run after a backup included the backup's kept heap).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# The figures behind these values: docs/decisions/0015-malloc-tuned-at-process-start.md.
# One arena: every thread's chunk buffers come from the main heap, which is trimmed as a
# whole. A second arena (2 until 2026-12-08) took a worker's pipeline, whose task runs in
# a thread, into mmap'd heaps that keep what they freed: 20 MiB more after a backup and
# 30 MiB more peak in the restore after it. The pipelines make few large allocations, so
# their threads do not contend for it.
_ARENAS = 1
# Far above any chunk buffer, so freed chunk buffers go back to malloc's free lists
# instead of being unmapped and faulted in again for the next chunk, which costs the
# envelope path much of its speed. Memory stays bounded: the pipelines hold a fixed
# number of buffers, which malloc then reuses.
_MMAP_THRESHOLD = 64 * 1024 * 1024  # bytes
# Free memory kept at the top of a heap before it is given back to the system. It must
# hold most of what the pipeline frees between two peaks, or every backup gives pages
# back and faults them in again (kernel CPU, on a virtual machine all the more). What is
# kept counts towards the peak RSS, so not more; an idle worker keeps at most this much
# per arena.
_TRIM_THRESHOLD = 24 * 1024 * 1024  # bytes

_lock = threading.Lock()
_done: bool | None = None
_trim: Callable[[int], int] | None = None


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds; returns False where libc is not glibc."""
    global _done
    with _lock:
        if _done is None:
            _done = _apply()
        return _done


def release_free_memory() -> None:
    """Give malloc's free memory back to the system (`malloc_trim`, every arena and not
    only a heap's top); nothing where libc is not glibc. Costs a few milliseconds: call it
    once a pipeline is done, not per chunk."""
    global _trim
    with _lock:
        if _trim is None:
            try:
                _trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                _trim = _no_trim
        trim = _trim
    trim(0)


def _no_trim(_pad: int) -> int:
    return 0


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
