"""`csbs serve` runs its task workers in a child process: niced, woken at once, and gone
with the service."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx2

from csbs.app import worker_child
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.domain.paging import PageRequest
from csbs.queue import QueueConfig, TaskFilter, TaskStatus, TaskStore
from tests.support.processes import clean_env, csbs_command, free_port, start_serve, wait_ready
from tests.support.runtime import password_auth

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _worker_child(serve: subprocess.Popen[bytes]) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and int(fields[1]) == serve.pid:
            if b"spawn_main" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    raise AssertionError(f"no worker process under {serve.pid}")


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _nice(pid: int) -> int:
    fields = _stat(pid)
    assert fields is not None
    return int(fields[16])


def test_serve_backs_up_through_a_niced_worker_process_that_dies_with_it(tmp_path: Path) -> None:
    """SQLite (no notifications): the API's wake-up reaches the child through its pipe, so
    the backup task starts at once, though the workers look for tasks only every 30 s."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    (data / "disks").mkdir(parents=True)
    disk = data / "disks" / "vda.img"
    disk.write_bytes(os.urandom(64 * 1024) + bytes(64 * 1024))
    serve = start_serve(
        data,
        port,
        log=tmp_path / "serve.log",
        CSBS_ADMIN_PASSWORD="admin-password-1",
        CSBS_WORKER_NICE="7",
        CSBS_WORKER_IDLE_POLL_SECONDS="30",
    )
    try:
        wait_ready(base, serve)
        child = _worker_child(serve)
        assert _nice(child) == _nice(serve.pid) + 7
        r = httpx2.post(
            f"{base}/v3/auth/tokens",
            json=password_auth("admin", "admin-password-1", project_name="admin"),
        )
        token = r.headers["X-Subject-Token"]
        pid = r.json()["token"]["project"]["id"]
        headers = {"X-Auth-Token": token}
        time.sleep(1.5)  # the child's workers are idle: only a wake-up starts a task promptly
        server = httpx2.post(
            f"{base}/v1/{pid}/servers",
            headers=headers,
            json={"server": {"name": "web1", "disks": [{"path": str(disk)}]}},
        ).json()["server"]
        r = httpx2.post(
            f"{base}/v1/{pid}/providers/{PROVIDER}/resources/{server['id']}/action",
            headers=headers,
            json={"protect": {"backup_name": "b1"}},
        )
        assert r.status_code == 200, r.text
        checkpoint_id = r.json()["checkpoint"]["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            items = httpx2.get(
                f"{base}/v1/{pid}/checkpoint_items",
                headers=headers,
                params={"checkpoint_id": checkpoint_id},
            ).json()["checkpoint_items"]
            if items and items[0]["status"] == "available":
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the backup did not finish: {items}")
        logs = httpx2.get(
            f"{base}/v1/{pid}/operation_logs", headers=headers, params={"operation_type": "backup"}
        ).json()["operation_logs"]
        assert len(logs) == 1 and logs[0]["status"] == "success"
        # Claimed at once, not after the 30 s idle poll: the pipe woke the child.
        created = datetime.fromisoformat(logs[0]["created_at"])
        started = datetime.fromisoformat(logs[0]["started_at"])
        assert (started - created).total_seconds() < 0.5, logs[0]

        serve.send_signal(signal.SIGKILL)
        serve.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the worker process outlived csbs serve"
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=60)


def test_a_command_lines_backup_wakes_the_worker_process_at_once(tmp_path: Path) -> None:
    """SQLite: `csbs backup create --wait` in a process of its own enqueues the task, and the
    wake-up socket beside the database wakes `csbs serve`'s worker child at once, though its
    workers look for tasks only every 30 s; the command returns when the backup is done."""
    port = free_port()
    data = tmp_path / "data"
    (data / "disks").mkdir(parents=True)
    disk = data / "disks" / "vda.img"
    disk.write_bytes(os.urandom(64 * 1024) + bytes(64 * 1024))
    serve = start_serve(
        data,
        port,
        log=tmp_path / "serve.log",
        CSBS_ADMIN_PASSWORD="admin-password-1",
        CSBS_WORKER_IDLE_POLL_SECONDS="30",
    )

    def cli(*args: str) -> str:
        done = subprocess.run(
            [*csbs_command(), *args, "--data-dir", str(data)],
            env=clean_env(CSBS_LOG_LEVEL="WARNING"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        wait_ready(f"http://127.0.0.1:{port}", serve)
        cli("admin", "project", "create", "p1")
        server_id = cli("server", "add", "--project", "p1", "--name", "vm", "--disk", str(disk))
        time.sleep(1.5)  # the child's workers are idle: only a wake-up starts a task promptly
        # The database under another URL than the service's: no control socket is named
        # after it, so the command enqueues in a process of its own (decision 0018).
        other_url = f"sqlite:///{data}/./csbs.db"
        cli("backup", "create", server_id.split()[-1], "--wait", "--database-url", other_url)
        engine = create_engine(f"sqlite:///{data / 'csbs.db'}")
        try:
            store = TaskStore(engine, SystemClock(), QueueConfig())
            (task,) = store.search(TaskFilter(operation_type="backup"), PageRequest(limit=10)).items
        finally:
            engine.dispose()
        assert task.status is TaskStatus.SUCCESS
        assert task.started_at is not None
        waited = (task.started_at - task.created_at).total_seconds()
        assert waited < 5.0, f"the backup started {waited:.1f} s after its enqueue"
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0


def test_sigterm_stops_the_worker_process_and_serve_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    serve = start_serve(
        tmp_path / "data", port, log=tmp_path / "serve.log", CSBS_ADMIN_PASSWORD="pw-123456789"
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", serve)
        child = _worker_child(serve)
        deadline = time.monotonic() + 30
        while '"msg": "worker started"' not in (tmp_path / "serve.log").read_text():
            assert time.monotonic() < deadline, "the worker process did not start"
            time.sleep(0.05)
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    assert not _alive(child)
    log = (tmp_path / "serve.log").read_text()
    assert '"msg": "worker stopped"' in log
    # The child reads the API's calls in flight (shared memory) and yields to them.
    started = next(line for line in log.splitlines() if '"msg": "worker started"' in line)
    assert '"yields_to_api": true' in started, started


def test_wake_ups_are_relayed_and_a_closed_pipe_ends_the_relay() -> None:
    class Store:
        pokes = 0

        def wake_local(self) -> None:
            self.pokes += 1

    store = Store()
    r, w = os.pipe()
    os.write(w, b"\0")
    os.close(w)
    worker_child.relay_wake_ups(r, store)  # returns once the writer is gone
    os.close(r)
    assert store.pokes == 1
