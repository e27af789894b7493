"""Waking idle workers in other processes over SQLite: a datagram on a unix socket.

PostgreSQL wakes listening workers with NOTIFY (`notify.Listener`); SQLite has no
notifications, so a worker in another process than the one that enqueued a task (the worker
child of `csbs serve` when `csbs backup create` runs, a `csbs worker`) would see the task
only at its next idle poll. Instead, each worker over a SQLite database binds a datagram
socket in a directory beside the database file (`<database>-wake/`, mode 0700), and
`TaskStore.poke` sends one byte to every socket there:

- bounded: one datagram per listening worker process, at most `MAX_LISTENERS`;
- never blocking: the send does not wait (a full socket buffer means that worker has a
  wake-up pending already);
- harmless when nobody listens: no directory or no socket, nothing sent; a socket whose
  process died refuses the datagram and is removed;
- by host: a socket's name begins with a digest of its worker's host name
  (`statements.host_digest`), and a task routed to a host wakes only the sockets of that
  host's workers (one routed to no host wakes them all).

The idle poll stays, as the fallback for a lost datagram.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from csbs.domain.ids import new_hex_id
from csbs.queue.statements import host_digest

log = logging.getLogger("csbs.queue")

#: Sockets a sender serves at most (one per worker process on this machine).
MAX_LISTENERS = 64
_SUFFIX = ".sock"
#: Longer socket paths do not fit `sun_path` (108 bytes): they are reached through an open
#: descriptor of their directory (`/proc/self/fd/N/name`, Linux).
_MAX_PATH = 100


class _Settable(Protocol):
    def set(self) -> None: ...


def directory_for(engine: sa.Engine) -> Path | None:
    """Where the wake-up sockets of `engine`'s SQLite database lie; None for PostgreSQL and
    for databases that are not a file."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(os.path.abspath(database) + "-wake")


class Sender:
    """Sends a wake-up to every worker listening beside one SQLite database."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, routes: Iterable[str | None] | None = None) -> None:
        """Wake the listening workers able to take tasks of `routes` (None: every one);
        never blocks, never raises."""
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(_SUFFIX)]
        except OSError:
            return  # nobody has listened here yet
        if routes is not None:
            wanted = {host_digest(r) for r in routes if r is not None}
            names = [n for n in names if _host_of(n) in wanted or _host_of(n) is None]
        if not names:
            return
        dir_fd: int | None = None
        sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            for name in names[:MAX_LISTENERS]:
                address = str(self.directory / name)
                if len(os.fsencode(address)) > _MAX_PATH:
                    if dir_fd is None:
                        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
                    address = f"/proc/self/fd/{dir_fd}/{name}"
                try:
                    sock.sendto(b"\0", address)
                except ConnectionRefusedError:
                    # Its process is gone (sockets are never reused): tidy up.
                    with contextlib.suppress(OSError):
                        os.unlink(self.directory / name)
                except OSError:
                    pass  # full (a wake-up is pending), or gone meanwhile
        except OSError:
            pass  # no socket or directory to send with: the idle poll remains
        finally:
            if sock is not None:
                sock.close()
            if dir_fd is not None:
                os.close(dir_fd)


def _host_of(name: str) -> str | None:
    """The host digest a socket's name begins with (None: a socket that takes any task)."""
    head = name.split("-", 1)[0]
    return head[1:] if head.startswith("h") else None


class SocketListener:
    """A thread that sets `event` on every datagram to this process's wake-up socket."""

    def __init__(self, directory: Path, event: _Settable, host: str | None = None) -> None:
        self.directory = directory
        self._event = event
        prefix = "" if host is None else f"h{host_digest(host)}-"
        self._name = f"{prefix}{os.getpid()}-{new_hex_id()[:12]}{_SUFFIX}"
        self._socket: socket.socket | None = None
        self._dir_fd: int | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="csbs-wake", daemon=True)

    @property
    def path(self) -> Path:
        return self.directory / self._name

    def _address(self) -> str:
        if self._dir_fd is not None:
            return f"/proc/self/fd/{self._dir_fd}/{self._name}"
        return str(self.path)

    def start(self) -> None:
        """Bind the socket and listen; without one (say, a read-only directory) the worker
        keeps its idle poll."""
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            if len(os.fsencode(self.path)) > _MAX_PATH:
                self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(self._address())
        except OSError as e:
            log.warning("no wake-up socket in %s: %s", self.directory, e)
            return
        self._socket = sock
        self._thread.start()

    def stop(self) -> None:
        sock = self._socket
        if sock is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            with wake:
                wake.sendto(b"\0", self._address())
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        sock.close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
        self._socket = None

    def _run(self) -> None:
        sock = self._socket
        assert sock is not None
        while not self._stopping.is_set():
            try:
                sock.recv(64)
                # Several enqueues in a row: one wake-up for all of them.
                with contextlib.suppress(BlockingIOError):
                    while True:
                        sock.recv(64, socket.MSG_DONTWAIT)
            except OSError:
                return
            self._event.set()


def sender_for(engine: sa.Engine) -> Sender | None:
    directory = directory_for(engine)
    return None if directory is None else Sender(directory)


def listener_for(
    engine: sa.Engine, event: _Settable, host: str | None = None
) -> SocketListener | None:
    directory = directory_for(engine)
    return None if directory is None else SocketListener(directory, event, host)
