"""`csbs serve`'s control socket (decision 0018): where it lies and who may use it, the
command line through it, and the command line without it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csbs.app.control import admitted
from csbs.cli.client import open_local_api
from csbs.config import load_settings
from tests.support.processes import clean_env, csbs_command, free_port, start_serve, wait_ready

NOBODY = 65534


@dataclass
class Deployment:
    data: Path
    database_url: str
    disk: Path
    tmp: Path

    @property
    def socket(self) -> Path:
        return load_settings(data_dir=self.data, database_url=self.database_url).control_socket

    def serve(self, log: str = "serve.log") -> subprocess.Popen[bytes]:
        port = free_port()
        proc = start_serve(
            self.data,
            port,
            log=self.tmp / log,
            CSBS_ADMIN_PASSWORD="admin-password-1",
            CSBS_DATABASE_URL=self.database_url,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return proc

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The command run as a user runs it, with Python's import trace on stderr (so that
        a test can tell whether it loaded SQLAlchemy, i.e. opened the database)."""
        done = subprocess.run(
            [*csbs_command()[:1], "-X", "importtime", *csbs_command()[1:], *args],
            env=clean_env(
                CSBS_DATA_DIR=str(self.data),
                CSBS_DATABASE_URL=self.database_url,
                CSBS_LOG_LEVEL="WARNING",
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert done.returncode == 0, done.stderr[-3000:]
        return done


def _loaded(done: subprocess.CompletedProcess[str], module: str) -> bool:
    return any(
        line.startswith("import time:") and line.split("|")[-1].strip() == module
        for line in done.stderr.splitlines()
    )


def _opened_the_database(done: subprocess.CompletedProcess[str]) -> bool:
    return _loaded(done, "sqlalchemy")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def _another_spelling(url: str) -> str:
    """The same database under another URL: no service's socket is named after it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return f"sqlite:///{path.parent}/./{path.name}"
    return f"{url}&application_name=csbs-direct"


def _deployment(base: Path, db_url: str) -> Deployment:
    data = base / "data"
    (data / "disks").mkdir(parents=True)
    disk = data / "disks" / "vda.img"
    disk.write_bytes(os.urandom(256 * 1024) + bytes(256 * 1024))
    return Deployment(data, db_url, disk, base)


@pytest.fixture
def deployment(tmp_path: Path, db_url: str) -> Deployment:
    return _deployment(tmp_path, db_url)


@pytest.fixture
def served(deployment: Deployment) -> Iterator[tuple[Deployment, str]]:
    """A running `csbs serve` with project p1 and its server `vm`; and that server's id."""
    proc = deployment.serve()
    try:
        deployment.cli("admin", "project", "create", "p1")
        out = deployment.cli(
            "server", "add", "--project", "p1", "--name", "vm", "--disk", str(deployment.disk)
        ).stdout
        yield deployment, out.split()[-1]
    finally:
        _stop(proc)


def test_the_command_line_asks_a_running_serve(served: tuple[Deployment, str]) -> None:
    deployment, server_id = served
    sock = deployment.socket
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert sock.parent == deployment.data / "run"

    created = deployment.cli("backup", "create", server_id, "--name", "first", "--wait")
    assert not _opened_the_database(created)
    assert not _loaded(created, "pydantic")  # neither the settings nor typer's coercion
    backup_id = created.stdout.strip()
    assert "backup success" in created.stderr and "100%" in created.stderr
    listed = deployment.cli("backup", "list")
    assert not _opened_the_database(listed)
    assert not _loaded(listed, "pydantic") and not _loaded(listed, "rich.progress")
    assert backup_id in listed.stdout and "available" in listed.stdout

    # The same listing read from the database itself: the same table.
    direct = deployment.cli(
        "backup", "list", "--database-url", _another_spelling(deployment.database_url)
    )
    assert _opened_the_database(direct)
    assert direct.stdout == listed.stdout
    for flags in (["--server", server_id, "--limit", "1"], ["--status", "error"]):
        through = deployment.cli("backup", "list", *flags)
        assert not _opened_the_database(through)
        other = _another_spelling(deployment.database_url)
        assert (
            through.stdout
            == deployment.cli("backup", "list", *flags, "--database-url", other).stdout
        )

    # `task wait` too, with the same output as on the database.
    api = open_local_api(deployment.data, deployment.database_url)
    assert api is not None
    (item,) = api.get(
        f"/v1/{api.project_id}/checkpoint_items", {"all_tenants": True, "name": "first"}
    )["checkpoint_items"]
    api.close()
    task_id = item["extend_info"]["taskid"]
    waited = deployment.cli("task", "wait", task_id)
    assert not _opened_the_database(waited)
    other = _another_spelling(deployment.database_url)
    assert waited.stdout == deployment.cli("task", "wait", task_id, "--database-url", other).stdout
    assert waited.stdout.strip() == f"task {task_id}: success"
    unknown = deployment.cli("task", "wait", "no-such-task", check=False)
    assert not _opened_the_database(unknown)
    alone = deployment.cli("task", "wait", "no-such-task", "--database-url", other, check=False)
    assert unknown.returncode == alone.returncode == 1
    assert (
        [line for line in unknown.stderr.splitlines() if line.startswith("error:")]
        == [line for line in alone.stderr.splitlines() if line.startswith("error:")]
        != []
    )

    # An error is told as the command line tells it without the service.
    refused = deployment.cli("backup", "create", "no-such-server", check=False)
    assert not _opened_the_database(refused)
    alone = deployment.cli(
        "backup",
        "create",
        "no-such-server",
        "--database-url",
        _another_spelling(deployment.database_url),
        check=False,
    )
    assert refused.returncode == alone.returncode == 1
    assert "CSBS.6000" in refused.stderr
    message = [line for line in refused.stderr.splitlines() if "CSBS.6000" in line]
    assert message == [line for line in alone.stderr.splitlines() if "CSBS.6000" in line]


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory every user may pass through (pytest's own is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="csbs-control-"))
    os.chmod(base, 0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_only_the_services_user_and_root_act_as_administrator(reachable: Path, db_url: str) -> None:
    deployment = _deployment(reachable, f"sqlite:///{reachable / 'csbs.db'}")
    proc = deployment.serve()
    try:
        _check_admission(deployment)
    finally:
        _stop(proc)


def _check_admission(deployment: Deployment) -> None:
    api = open_local_api(deployment.data, deployment.database_url)
    assert api is not None  # this test runs as root, and so does the service
    whoami = api.get("/v3/auth/tokens")["token"]
    assert whoami["project"]["name"] == "admin" and whoami["roles"][0]["name"] == "admin"
    api.close()

    sock = deployment.socket
    os.chmod(deployment.data, 0o711)  # the data directory is the service's alone too
    assert _as_nobody(sock) == "unreachable"  # a 0700 directory, a 0600 socket: no way in
    # Even where the modes let another user in, the service refuses it.
    os.chmod(sock.parent, 0o711)
    os.chmod(sock, 0o666)
    assert _as_nobody(sock) == "refused"
    assert "control socket: connection refused" in (deployment.tmp / "serve.log").read_text()


def _as_nobody(sock: Path) -> str:
    """What a process of user `nobody` gets when it asks the socket who it is."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, then connect
        outcome = b"error"
        try:
            os.close(read)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(10)
                conn.connect(str(sock))
            except PermissionError:
                outcome = b"unreachable"
            else:
                answer = b""
                try:  # the service may have answered and closed before this is sent
                    conn.sendall(b"GET /v3/auth/tokens HTTP/1.1\r\nHost: localhost\r\n\r\n")
                except OSError:
                    pass
                try:
                    while chunk := conn.recv(65536):
                        answer += chunk
                except OSError:
                    pass
                if answer.startswith(b"HTTP/1.1 403") and b"CSBS.9011" in answer:
                    outcome = b"refused"
                else:
                    outcome = b"answered: " + answer[:200]
            os.write(write, outcome)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        outcome = f.read()
    os.waitpid(pid, 0)
    return outcome.decode(errors="replace")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_socket_goes_with_serve_and_one_left_by_a_killed_serve_is_replaced(
    deployment: Deployment,
) -> None:
    first = deployment.serve("first.log")
    try:
        deployment.cli("admin", "project", "create", "p1")
        assert deployment.socket.exists()
    finally:
        first.kill()  # no chance to clean up
        first.wait()
    assert deployment.socket.exists()
    assert open_local_api(deployment.data, deployment.database_url) is None
    # Nobody answers there: the command line works on the database.
    alone = deployment.cli("backup", "list")
    assert _opened_the_database(alone) and "id" in alone.stdout

    second = deployment.serve("second.log")
    try:
        through = deployment.cli("backup", "list")
        assert not _opened_the_database(through)
        assert through.stdout == alone.stdout
    finally:
        _stop(second)
    assert not deployment.socket.exists()
    after = deployment.cli("backup", "list")
    assert _opened_the_database(after) and after.stdout == alone.stdout


def test_who_is_admitted() -> None:
    assert admitted(1000, service_uid=1000)
    assert admitted(0, service_uid=1000)
    assert not admitted(1001, service_uid=1000)
    assert not admitted(NOBODY, service_uid=0)


def test_a_second_serve_leaves_a_live_socket_alone(tmp_path: Path) -> None:
    """Two services of one database and data directory: the second serves no socket rather
    than take the first one's (and removes nothing at its end)."""
    from csbs.app.control import ControlSocket

    path = tmp_path / "run" / "api-x.sock"
    first = ControlSocket(path)
    listening = first.open()
    assert listening is not None
    try:
        second = ControlSocket(path)
        assert second.open() is None
        second.remove()
        assert path.exists()
    finally:
        listening.close()
        first.remove()
    assert not path.exists()


def test_a_socket_that_cannot_be_made_is_not_served(tmp_path: Path) -> None:
    """The service then serves its port alone (and the command line opens the database)."""
    from csbs.app.control import ControlSocket

    (tmp_path / "run").write_text("a file where the directory should be")
    control = ControlSocket(tmp_path / "run" / "api-x.sock")
    assert control.open() is None
    control.remove()
