"""Where `csbs serve`'s control socket lies, and how to reach a path longer than a socket
address holds (decision 0018).

`csbs serve` answers its HTTP API on a unix stream socket beside its TCP port, in
`<data_dir>/run/` (mode 0700; the socket 0600); a caller whose process runs as the
service's own user or as root acts there as the administrator. The socket's name carries a
digest of the database URL the service uses, so a command line that would open another
database never finds it and opens its own.

Standard library only: the command line computes the path before it decides whether to
load the settings, SQLAlchemy and the rest at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

#: The directory in the data directory that holds the socket (mode 0700).
RUN_DIR = "run"
#: Longer addresses do not fit `sun_path` (108 bytes): they are reached through an open
#: descriptor of their directory (`/proc/self/fd/N/name`, Linux), as `queue/wake.py` does.
_MAX_PATH = 100


def socket_path(data_dir: Path, database_url: str) -> Path:
    """The control socket of a service over `database_url` with data directory `data_dir`."""
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return data_dir / RUN_DIR / f"api-{digest}.sock"


@contextlib.contextmanager
def address(path: Path) -> Iterator[str]:
    """An address for `bind`/`connect` that names `path`, however long; valid inside the
    block (a long one holds its directory open until then)."""
    text = str(path)
    if len(os.fsencode(text)) <= _MAX_PATH:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def connect(path: Path, timeout: float | None = None) -> socket.socket:
    """A stream connection to the socket at `path` (OSError as `connect` raises it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with address(path) as where:
            sock.connect(where)
    except BaseException:
        sock.close()
        raise
    return sock
