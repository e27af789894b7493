"""An attacker's loop: swap a file with a symlink atomically, over and over, until SIGTERM.

Run as `python -m tests.support.swapper VICTIM LINK`; prints the number of swaps on exit,
with VICTIM back in its place. A process of its own, as an attacker's would be, so it
competes with the service for nothing but the file system.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: str, b: str) -> None:
    """renameat2(RENAME_EXCHANGE): both names stay, their files trade places at once."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def main(victim: str, link: str) -> None:
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    swaps = 0
    while not stop:
        exchange(victim, link)
        swaps += 1
        time.sleep(0.0002)
    if os.path.islink(victim):
        exchange(victim, link)
    print(swaps, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
