"""The command line finds `csbs serve`'s control socket as the settings place it, without
loading them; and speaks HTTP to it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csbs.cli.client import ApiError, LocalApi, open_local_api, socket_path
from csbs.config import load_settings


@pytest.mark.parametrize(
    ("flags", "env", "toml"),
    [
        ({}, {}, None),
        ({}, {"XDG_DATA_HOME": "{tmp}/xdg"}, None),
        ({"data_dir": "{tmp}/flag"}, {"CSBS_DATA_DIR": "{tmp}/env"}, None),
        ({}, {"CSBS_DATA_DIR": "{tmp}/env"}, None),
        ({}, {"csbs_data_dir": "{tmp}/lower", "csbs_database_url": "sqlite:///{tmp}/x.db"}, None),
        ({}, {"CSBS_DATABASE_URL": "postgresql://u@h/db"}, None),
        ({"database_url": "postgresql://u@h/flag"}, {"CSBS_DATABASE_URL": "sqlite:///e.db"}, None),
        ({}, {}, 'data_dir = "{tmp}/toml"\ndatabase_url = "postgresql://u@h/toml"\n'),
        ({}, {"CSBS_DATA_DIR": "{tmp}/env"}, 'data_dir = "{tmp}/toml"\n'),
        ({}, {"CSBS_DATA_DIR": "~/home-relative"}, None),
    ],
)
def test_the_socket_is_where_the_settings_put_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: dict[str, str],
    env: dict[str, str],
    toml: str | None,
) -> None:
    for key in ("XDG_DATA_HOME",):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    if toml is not None:
        config = tmp_path / "csbs.toml"
        config.write_text(toml.format(tmp=tmp_path))
        monkeypatch.setenv("CSBS_CONFIG_FILE", str(config))
    given = {k: v.format(tmp=tmp_path) for k, v in flags.items()}
    expected = load_settings(**given).control_socket
    data_dir = Path(given["data_dir"]) if "data_dir" in given else None
    assert socket_path(data_dir, given.get("database_url")) == expected


def test_a_config_file_that_cannot_be_read_names_no_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CSBS_CONFIG_FILE", str(tmp_path / "missing.toml"))
    assert socket_path(None, None) is None


class FakeService:
    """A unix socket that answers each request with the next canned answer, and closes a
    connection after `per_connection` answers (as a server ends kept-alive connections)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.canned: list[bytes] = []
        self.per_connection = 100
        self.connections = 0
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        self._server.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(5)
                buffer = b""
                for _ in range(self.per_connection):
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buffer += data
                    if b"\r\n\r\n" not in buffer:
                        break
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buffer) < length:
                        buffer += conn.recv(65536)
                    buffer = buffer[length:]
                    conn.sendall(self.canned.pop(0))


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeService]:
    service = FakeService(tmp_path / "s.sock")
    try:
        yield service
    finally:
        service.close()


def _answer(status: int, body: object, *, chunked: bool = False) -> bytes:
    data = json.dumps(body).encode()
    if chunked:
        half = len(data) // 2
        payload = (
            f"{half:x}\r\n".encode()
            + data[:half]
            + b"\r\n"
            + f"{len(data) - half:x}\r\n".encode()
            + data[half:]
            + b"\r\n0\r\n\r\n"
        )
        return f"HTTP/1.1 {status} X\r\ntransfer-encoding: chunked\r\n\r\n".encode() + payload
    return f"HTTP/1.1 {status} X\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data


def test_calls_answers_and_errors(fake: FakeService) -> None:
    fake.canned += [
        _answer(200, {"a": 1}),
        _answer(200, {"b": [1, 2]}, chunked=True),
        _answer(400, {"error_code": "CSBS.6000", "error_msg": "server x not found"}),
        _answer(201, {"made": True}),
    ]
    api = LocalApi(fake.path)
    assert api.get("/v1/p/x", {"all_tenants": True, "status": None, "limit": 5}) == {"a": 1}
    assert api.get("/v1/p/y") == {"b": [1, 2]}
    with pytest.raises(ApiError) as raised:
        api.get("/v1/p/z")
    assert (raised.value.status, raised.value.code) == (400, "CSBS.6000")
    assert raised.value.message == "server x not found"
    assert api.post("/v1/p/w", {"k": "v"}) == {"made": True}
    assert fake.connections == 1  # one kept-alive connection for every call
    api.close()


def test_a_read_is_asked_again_on_a_new_connection_when_the_kept_one_was_closed(
    fake: FakeService,
) -> None:
    fake.per_connection = 1
    fake.canned += [_answer(200, {"first": 1}), _answer(200, {"second": 2})]
    api = LocalApi(fake.path)
    assert api.get("/first") == {"first": 1}
    assert api.get("/second") == {"second": 2}
    assert fake.connections == 2
    # A write is not sent twice: it may have been done.
    fake.canned.append(_answer(200, {"never": 0}))
    with pytest.raises(OSError):
        api.post("/third", {})
    api.close()


def _listening_at(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def test_a_service_that_does_not_answer_is_done_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from csbs.cli import client

    monkeypatch.setattr(client, "_FIRST_TIMEOUT_SECONDS", 0.2)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    path = socket_path(tmp_path / "data", url)
    assert path is not None
    silent = _listening_at(path)  # connections wait in its backlog, never answered
    try:
        started = time.monotonic()
        assert open_local_api(tmp_path / "data", url) is None
        assert time.monotonic() - started < 5  # the first answer's time, not a call's
    finally:
        silent.close()
    # A socket nobody listens on any more (its service was killed): no service either.
    assert path.exists() and open_local_api(tmp_path / "data", url) is None


def test_a_refusal_means_no_service(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    path = socket_path(tmp_path / "data", url)
    assert path is not None
    path.parent.mkdir(parents=True)
    service = FakeService(path)
    try:
        service.canned.append(
            _answer(403, {"error_code": "CSBS.9011", "error_msg": "not the service's user"})
        )
        assert open_local_api(tmp_path / "data", url) is None
        service.canned.append(
            _answer(200, {"token": {"project": {"id": "p-admin", "name": "admin"}}})
        )
        api = open_local_api(tmp_path / "data", url)
        assert api is not None and api.project_id == "p-admin"
        api.close()
    finally:
        service.close()
