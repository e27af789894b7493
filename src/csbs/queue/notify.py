"""Waking idle workers: PostgreSQL LISTEN/NOTIFY, plus pokes from this process."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import sqlalchemy as sa

from csbs.queue.statements import CHANNEL, channel_for

log = logging.getLogger("csbs.queue")


class Listener:
    """A thread that LISTENs on the queue's general channel and on its host's
    (`statements.channel_for`), and sets `event` on every notification.

    It holds one dedicated connection (not from the pool) and reconnects by itself after a
    database restart; after a reconnect it sets the event once, since notifications sent
    while it was away are lost.
    """

    def __init__(self, engine: sa.Engine, event: threading.Event, host: str | None = None) -> None:
        self._engine = engine
        self.channels = sorted({CHANNEL, channel_for(host)})
        self._event = event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="csbs-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _connect(self) -> Any:
        cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
        conn = self._engine.dialect.connect(*cargs, **cparams)
        conn.autocommit = True
        for channel in self.channels:  # names made of letters, digits and underscores
            conn.execute(f"LISTEN {channel}")
        return conn

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                backoff = 0.5
                self._event.set()
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=1.0, stop_after=64):
                        self._event.set()
            except Exception as e:  # any driver error: reconnect after a pause
                log.warning("queue listener lost its connection: %s", type(e).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
