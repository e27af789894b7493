"""Where the test PostgreSQL is, and whether it answers."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
import time

import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "CSBS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@functools.cache
def pg_available() -> bool:
    engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


class PostgresRestart:
    """Restarts the test cluster from a thread: stop (fast: every connection is cut), a
    pause with the server down, start. Only for the local cluster (`pg_ctlcluster`)."""

    def __init__(self, down_seconds: float = 1.5) -> None:
        self.down_seconds = down_seconds
        self._down = threading.Event()
        self._up = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def possible() -> bool:
        return (
            "CSBS_TEST_PG_URL" not in os.environ
            and shutil.which("pg_ctlcluster") is not None
            and os.path.isdir("/etc/postgresql")
            and os.geteuid() == 0
        )

    @staticmethod
    def _ctl(action: str, *extra: str) -> None:
        (version,) = os.listdir("/etc/postgresql")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *extra],
            check=True,
            capture_output=True,
        )

    def begin(self) -> None:
        """Start the restart in the background (once); `wait_down` waits for the stop."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._ctl("stop", "-m", "fast")
            self._down.set()
            time.sleep(self.down_seconds)
        finally:
            self._down.set()
            self._ctl("start")
            for _ in range(300):
                if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0:
                    break
                time.sleep(0.1)
            self._up.set()

    def wait_down(self) -> None:
        assert self._down.wait(60), "PostgreSQL did not stop"

    def wait_up(self) -> None:
        if self._thread is not None:
            assert self._up.wait(120), "PostgreSQL did not start again"
            self._thread.join()

    @property
    def happened(self) -> bool:
        return self._up.is_set()
