"""The SQLite wake-up sockets: what a sender does with listeners, without, and after them."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from csbs.db.engine import create_engine
from csbs.queue import wake


def test_sending_with_nobody_listening_does_nothing(tmp_path: Path) -> None:
    sender = wake.Sender(tmp_path / "csbs.db-wake")
    sender.send()  # no directory
    (tmp_path / "csbs.db-wake").mkdir()
    sender.send()  # an empty one
    assert os.listdir(tmp_path / "csbs.db-wake") == []


@pytest.mark.parametrize("depth", [1, 12], ids=["short path", "path beyond sun_path"])
def test_a_listener_is_woken_and_removes_its_socket(tmp_path: Path, depth: int) -> None:
    directory = tmp_path.joinpath(*(["a-rather-long-directory-name"] * depth)) / "csbs.db-wake"
    directory.parent.mkdir(parents=True)
    woken = threading.Event()
    listener = wake.SocketListener(directory, woken)
    listener.start()
    try:
        assert directory.stat().st_mode & 0o777 == 0o700
        wake.Sender(directory).send()
        assert woken.wait(5), "the listener was not woken"
    finally:
        listener.stop()
    assert os.listdir(directory) == []


def test_a_dead_listeners_socket_is_removed(tmp_path: Path) -> None:
    directory = tmp_path / "csbs.db-wake"
    directory.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "1-gone.sock"))
    dead.close()  # its file stays, as after a kill -9
    woken = threading.Event()
    listener = wake.SocketListener(directory, woken)
    listener.start()
    try:
        wake.Sender(directory).send()
        assert woken.wait(5)
        assert os.listdir(directory) == [listener.path.name]
    finally:
        listener.stop()


def test_the_directory_is_beside_a_sqlite_database_only(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'csbs.db'}")
    try:
        assert wake.directory_for(engine) == tmp_path / "csbs.db-wake"
    finally:
        engine.dispose()
    memory = sa.create_engine("sqlite://")
    try:
        assert wake.directory_for(memory) is None
    finally:
        memory.dispose()
