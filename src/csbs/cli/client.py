"""The command line's way to a running `csbs serve`: its public HTTP API over the control
socket (decision 0018).

A command that only reads or enqueues through the API does not need to load the settings,
SQLAlchemy and the services (half a second or more of start-up): when the service of the
same data directory and database answers on its control socket, the command asks it, as
the administrator the same user would be by opening the database; when nothing answers
(no `csbs serve`, or one of another database) it works on the database itself as before.

Standard library only, and nothing of csbs but `csbs.control`: what this module imports is
what such a command costs beyond typer.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from csbs import control

#: Seconds to wait for the service's answer to one call (a backup is enqueued, not run,
#: within a call; a longer wait means the service is stuck, and the command says so).
_TIMEOUT_SECONDS = 60.0
#: ... and to its first answer, before the command has sent anything that changes a thing:
#: a service that does not answer by then (stopped, stuck) is done without.
_FIRST_TIMEOUT_SECONDS = 10.0


class ApiError(Exception):
    """An error answer of the API (spec §11.10): its status, CSBS code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class _Connection:
    """HTTP/1.1 over the control socket, one call at a time on one kept-alive connection.

    Written out rather than `http.client`, whose import (the `email` package) alone costs
    a tenth of what a listing may take; the service is uvicorn, whose answers carry a
    Content-Length or are chunked."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._sock: socket.socket | None = None
        self._buffer = b""
        self.timeout = _TIMEOUT_SECONDS

    def call(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        if self._sock is None:
            self._sock = control.connect(self._path, self.timeout)
            self._buffer = b""
        self._sock.settimeout(self.timeout)
        head = f"{method} {url} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        return self._response()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get("transfer-encoding") == "chunked":
            body = self._chunked()
        else:
            body = self._take(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.close()
        return status, body

    def _chunked(self) -> bytes:
        parts = []
        while True:
            while b"\r\n" not in self._buffer:
                self._fill()
            size_line, _, self._buffer = self._buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            parts.append(self._take(size + 2)[:size])
            if size == 0:
                return b"".join(parts)

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _fill(self) -> None:
        assert self._sock is not None
        data = self._sock.recv(65536)
        if not data:
            self.close()
            raise ConnectionResetError("the service closed the connection")
        self._buffer += data


class LocalApi:
    """The API of the `csbs serve` on this machine, as its administrator."""

    def __init__(self, path: Path) -> None:
        self._connection = _Connection(path)
        #: the administrator's project (set by `open_local_api`)
        self.project_id = ""

    def get(self, path: str, query: Mapping[str, object | None] | None = None) -> Any:
        """The JSON body of a GET; raises ApiError for an error answer."""
        return self._call("GET", _url(path, query), None)

    def post(self, path: str, body: object) -> Any:
        """The JSON body of a POST of `body`; raises ApiError for an error answer."""
        return self._call("POST", path, json.dumps(body).encode())

    @property
    def timeout(self) -> float:
        """Seconds to wait for an answer."""
        return self._connection.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._connection.timeout = seconds

    def close(self) -> None:
        self._connection.close()

    def _call(self, method: str, url: str, body: bytes | None) -> Any:
        try:
            status, data = self._connection.call(method, url, body)
        except (ConnectionResetError, BrokenPipeError):
            # The service closed an idle kept-alive connection: a read is asked again on a
            # new one. A write is not, since it may have been done.
            self._connection.close()
            if method != "GET":
                raise
            status, data = self._connection.call(method, url, body)
        if status >= 400:
            raise _error(status, data)
        return json.loads(data) if data else None


def segment(value: str) -> str:
    """`value` as one segment of a path (a user's argument never reaches another route)."""
    return urllib.parse.quote(value, safe="")


def _url(path: str, query: Mapping[str, object | None] | None) -> str:
    if not query:
        return path
    pairs = [(k, _text(v)) for k, v in query.items() if v is not None]
    return f"{path}?{urllib.parse.urlencode(pairs)}" if pairs else path


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(status: int, data: bytes) -> ApiError:
    try:
        body = json.loads(data)
        return ApiError(status, str(body["error_code"]), str(body["error_msg"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(status, f"HTTP {status}", data.decode(errors="replace")[:200])


def open_local_api(data_dir: Path | None, database_url: str | None) -> LocalApi | None:
    """The local service's API, when a `csbs serve` of this data directory and database
    answers on its control socket and admits this process; else None (the caller opens the
    database itself)."""
    path = socket_path(data_dir, database_url)
    if path is None or not os.path.exists(path):
        return None
    api = LocalApi(path)
    try:
        # Who the service takes this process for; a refusal, a draining service, one that
        # does not answer or a stale socket all mean: do it without the service.
        api.timeout = _FIRST_TIMEOUT_SECONDS
        whoami = api.get("/v3/auth/tokens")
        api.project_id = str(whoami["token"]["project"]["id"])
        api.timeout = _TIMEOUT_SECONDS
    except (OSError, ApiError, ValueError, KeyError, TypeError, IndexError):
        api.close()
        return None
    return api


def socket_path(data_dir: Path | None, database_url: str | None) -> Path | None:
    """The control socket of the service whose settings this command would have: the flags
    given, else `CSBS_DATA_DIR` and `CSBS_DATABASE_URL` (any case, as the settings read
    them), else the file named by `CSBS_CONFIG_FILE`, else the defaults
    (`csbs.config.Settings`; a test keeps the two equal). None when that file cannot be
    read: the settings will say why."""
    env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith("CSBS_")}
    file: dict[str, Any] = {}
    if env.get("CSBS_CONFIG_FILE"):
        import tomllib

        try:
            with open(env["CSBS_CONFIG_FILE"], "rb") as f:
                file = tomllib.load(f)
        except (OSError, ValueError):
            return None
    data = data_dir or env.get("CSBS_DATA_DIR") or file.get("data_dir")
    if data is None:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        where = Path(base) / "csbs"
    else:
        where = Path(data).expanduser().absolute()
    url = database_url or env.get("CSBS_DATABASE_URL") or file.get("database_url")
    return control.socket_path(where, str(url or f"sqlite:///{where / 'csbs.db'}"))
