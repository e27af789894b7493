"""`csbs serve`'s control socket: the same HTTP API on a unix stream socket, for the command
line of the machine (decision 0018).

A process connected there whose user is the service's own, or root, acts as the
administrator: the authority that user has anyway, since it can open the database and the
data directory itself. The kernel tells who is connected (`SO_PEERCRED`); anyone else is
answered 403 and disconnected before a byte of its request is read. The socket lies in
`<data_dir>/run/` (mode 0700) with mode 0600, so other users cannot reach it in the first
place; the peer check holds even if those modes are loosened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from csbs import control
from csbs.api.edge import LOCAL_PEER, LocalPeer
from csbs.api.errors import error_body
from csbs.domain import errors

log = logging.getLogger("csbs")

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_REFUSED_MESSAGE = "Only the service's own user and root may use the control socket."


def _refusal() -> bytes:
    body = json.dumps(error_body(403, errors.Forbidden.code, _REFUSED_MESSAGE)).encode()
    head = (
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_REFUSAL = _refusal()


def peer_of(sock: Any) -> LocalPeer:
    """Who is at the other end of a connected unix socket, as the kernel recorded it when
    that process connected."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return LocalPeer(pid=pid, uid=uid, gid=gid)


def admitted(peer_uid: int, service_uid: int) -> bool:
    """Whether a process of user `peer_uid` may act as the administrator of a service run
    by `service_uid`: its own user and root may (both can open its database anyway)."""
    return peer_uid in (service_uid, 0)


class _AsLocalPeer:
    """The application, with every call of one admitted connection marked as coming from
    its peer (what `api.deps.principal_of` reads)."""

    def __init__(self, app: ASGIApp, peer: LocalPeer) -> None:
        self._app = app
        self._peer = peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[LOCAL_PEER] = self._peer
        await self._app(scope, receive, send)


class ControlProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol; on a unix socket, the peer is checked when it connects."""

    #: the uid of the process that serves (set once, before serving)
    service_uid = os.getuid()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return  # a TCP connection: callers authenticate with tokens
        peer = peer_of(sock)
        if not admitted(peer.uid, self.service_uid):
            log.warning(
                "control socket: connection refused",
                extra={"peer_pid": peer.pid, "peer_uid": peer.uid},
            )
            transport.write(_REFUSAL)
            transport.close()
            return
        self.app = _AsLocalPeer(self.app, peer)


class ControlSocket:
    """The listening socket at `path`: made at start, removed at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None

    def open(self) -> socket.socket | None:
        """Bind and listen; None when another live service answers at `path` already, or
        the socket cannot be made (the service then serves its port alone, and the command
        line opens the database as without it).

        A socket file left by a service that was killed (nobody accepts on it) is
        replaced."""
        try:
            return self._open()
        except OSError as e:
            log.warning(
                "control socket: not served",
                extra={"path": str(self.path), "error": f"{type(e).__name__}: {e}"},
            )
            return None

    def _open(self) -> socket.socket | None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        try:
            control.connect(self.path, timeout=1.0).close()
        except FileNotFoundError:
            pass
        except OSError:  # refused: left behind by a service that no longer runs
            self.path.unlink(missing_ok=True)
        else:
            log.warning(
                "control socket: another csbs serve answers there; serving none",
                extra={"path": str(self.path)},
            )
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with control.address(self.path) as where:
                sock.bind(where)
            os.chmod(self.path, 0o600)
            sock.listen(128)
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            sock.close()
            raise
        return sock

    def remove(self) -> None:
        """Remove the socket file, if it is still the one `open` made."""
        if self._inode is None:
            return
        try:
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._inode = None
