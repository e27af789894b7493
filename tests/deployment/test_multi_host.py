"""The multi-host deployment test: csbs as docs/deployment.md sets it up.

PostgreSQL, an S3-protocol server (moto's, over HTTP), two `csbs serve` API processes
without embedded workers, and `csbs worker` processes on "hosts" h1 and h2, each with a
data directory of its own (its copy of the master key, its inventory root) — every one
a real process, configured only through `CSBS_*` variables as the systemd units of
`deploy/` configure them. The mistakes of a first multi-host set-up are refused with their
message and write nothing; killing one API process leaves the other serving; a backup runs
on the host its server names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from csbs.blobstore.s3 import S3Store
from tests.blobstore.conftest import MOTO_CREDENTIALS
from tests.support.databases import PG_ADMIN_URL, pg_available
from tests.support.processes import clean_env, csbs_command, free_port, wait_ready
from tests.support.runtime import password_auth

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
ADMIN_PASSWORD = "multi-host-admin-password"
HOSTS = ("h1", "h2")
#: task_start_deadline_seconds of the deployment: a task for a host without a live worker
#: fails this long after its creation (the refusals below happen well within it).
START_DEADLINE = 40
#: worker_stale_seconds: workers beat every quarter of it, and look for stranded tasks.
STALE = 4
#: worker_idle_poll_seconds (its maximum): a worker claims unasked once in this long.
IDLE_POLL = 60
#: How often the workers prune ended tasks here (ten minutes in production).
PRUNE_INTERVAL = 2


@dataclasses.dataclass
class Api:
    name: str
    proc: subprocess.Popen[bytes]
    base: str


class Deployment:
    """The processes of one deployment, and what the test asks of them."""

    def __init__(self, root: Path, db_url: str, s3_url: str, bucket: S3Store) -> None:
        self.root = root
        self.db_url = db_url
        self.s3_url = s3_url
        self.bucket = bucket
        self.engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.apis: dict[str, Api] = {}
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.token = ""
        self.pid = ""

    # -- processes --------------------------------------------------------------------------

    def env(self, data_dir: Path, *, repository: bool = True, **extra: str) -> dict[str, str]:
        """What /etc/csbs/csbs.env gives every process (deploy/csbs.env.example), and the
        process's own data directory."""
        env = {
            "CSBS_DATABASE_URL": self.db_url,
            "CSBS_DATA_DIR": str(data_dir),
            "CSBS_LOG_JSON": "true",
            "CSBS_TASK_START_DEADLINE_SECONDS": str(START_DEADLINE),
            "CSBS_WORKER_STALE_SECONDS": str(STALE),
            **extra,
        }
        if repository:
            env["CSBS_REPOSITORY_URL"] = self.s3_url
        return clean_env(**env)

    def data_dir(self, name: str, *, key: bool = True) -> Path:
        """A machine's data directory, with its copy of the deployment's key file."""
        path = self.root / name
        (path / "disks").mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        if key and not (path / "master.key").exists():
            shutil.copy(self.root / "api-a" / "master.key", path / "master.key")
            (path / "master.key").chmod(0o600)
        return path

    def spawn(
        self, args: list[str], log: str, env: dict[str, str], command: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(self.root / f"{log}.log", "ab") as out:
            proc = subprocess.Popen(
                [*(command or csbs_command()), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.procs.append(proc)
        return proc

    def run(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """A command that must end by itself (a refusal, a check)."""
        return subprocess.run(
            [*csbs_command(), *args], env=env, capture_output=True, text=True, timeout=120
        )

    def start_api(self, name: str) -> Api:
        port = free_port()
        data_dir = self.data_dir(f"api-{name}")
        # No inventory roots of the hosts here: a server's disk paths are opened on its
        # host, by its worker, never on the API machine.
        env = self.env(
            data_dir,
            CSBS_ADMIN_PASSWORD=ADMIN_PASSWORD,
            CSBS_EMBEDDED_WORKERS="false",
            CSBS_EMBEDDED_SCHEDULER="false",
        )
        proc = self.spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], f"api-{name}", env)
        api = Api(name, proc, f"http://127.0.0.1:{port}")
        self.apis[name] = api
        return api

    def start_worker(self, host: str) -> subprocess.Popen[bytes]:
        """`csbs worker --host HOST` that counts its claims and prunes every few seconds
        (`tests/support/instrumented_csbs`); it looks for work unasked only once a minute,
        so its claims are its wake-ups."""
        data_dir = self.data_dir(host)
        env = self.env(
            data_dir,
            CSBS_INVENTORY_ROOTS=str(data_dir / "disks"),
            CSBS_WORKER_IDLE_POLL_SECONDS=str(IDLE_POLL),
            CSBS_TASK_RETENTION_DAYS="1",
            CSBS_TEST_PRUNE_INTERVAL_SECONDS=str(PRUNE_INTERVAL),
        )
        counting = [sys.executable, "-m", "tests.support.instrumented_csbs"]
        counting.append(str(self.claims_file(host)))
        args = ["worker", "--host", host, "--concurrency", "2"]
        proc = self.spawn(args, host, env, command=counting)
        self.workers[host] = proc
        return proc

    def claims_file(self, host: str) -> Path:
        return self.root / f"{host}.claims"

    def claims(self, host: str) -> int:
        """How many claims the workers of `host` ran so far."""
        path = self.claims_file(host)
        return len(path.read_text().splitlines()) if path.exists() else 0

    def wait_worker(self, host: str, timeout: float = 180) -> None:
        log = self.root / f"{host}.log"
        deadline = time.monotonic() + timeout
        while '"msg": "worker started"' not in log.read_text():
            assert self.workers[host].poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"worker {host} did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.engine.dispose()

    # -- the API ----------------------------------------------------------------------------

    def call(self, api: str, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        return httpx2.request(
            method,
            f"{self.apis[api].base}/v1/{self.pid}{path}",
            headers={"X-Auth-Token": self.token},
            timeout=30,
            **kwargs,
        )

    def disk(self, host: str, name: str) -> Path:
        disk = self.root / host / "disks" / f"{name}.img"
        disk.parent.mkdir(parents=True, exist_ok=True)
        with open(disk, "wb") as f:
            f.write(os.urandom(256 * 1024))
            f.truncate(2 << 20)
        return disk

    def server_on_its_host(self, name: str, host: str) -> str:
        """`csbs server add --host HOST` run on that host (its inventory roots), as the
        walk-through registers a server; the host needs no running worker for it."""
        disk = self.disk(host, name)
        data_dir = self.data_dir(f"{host}-cli")
        env = self.env(data_dir, CSBS_WORKER_HOST=host, CSBS_INVENTORY_ROOTS=str(disk.parent))
        args = ["server", "add", "--project", "admin", "--name", name, "--host", host]
        done = self.run([*args, "--disk", str(disk)], env)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()[-1]

    def server(self, api: str, name: str, host: str) -> str:
        """A server registered through the API: its host's worker opens its disk paths."""
        disk = self.disk(host, name)
        r = self.call(
            api,
            "POST",
            "/servers",
            json={"server": {"name": name, "host": host, "disks": [{"path": str(disk)}]}},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["server"]["id"])

    def protect(self, api: str, server_id: str) -> str:
        """Back a server up; the backup's (checkpoint item's) id."""
        r = self.call(
            api,
            "POST",
            f"/providers/{PROVIDER}/resources/{server_id}/action",
            json={"protect": {"backup_name": f"of-{server_id}"}},
        )
        assert r.status_code == 200, r.text
        checkpoint = r.json()["checkpoint"]["id"]
        r = self.call(api, "GET", "/checkpoint_items", params={"checkpoint_id": checkpoint})
        (item,) = r.json()["checkpoint_items"]
        return str(item["id"])

    def wait_backup(self, api: str, backup_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.call(api, "GET", f"/checkpoint_items/{backup_id}").json()
            if item["checkpoint_item"]["status"] in ("available", "error"):
                return dict(item["checkpoint_item"])
            time.sleep(0.1)
        raise AssertionError(f"backup {backup_id} did not finish")

    def operation_log(self, api: str, backup_id: str) -> dict[str, Any]:
        r = self.call(api, "GET", "/operation_logs", params={"checkpoint_item_id": backup_id})
        assert r.status_code == 200, r.text
        (log,) = r.json()["operation_logs"]
        return dict(log)

    def task_of(self, backup_id: str) -> dict[str, Any]:
        """The backup's task row as the database holds it."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT id, status, attempts, route, lease_owner, created_at, ended_at "
                    "FROM tasks "
                    "WHERE checkpoint_item_id = :b"
                ),
                {"b": backup_id},
            ).one()
        return dict(row._mapping)

    def blobs(self) -> set[str]:
        return set(self.bucket.list(""))


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    """A database of its own on the test PostgreSQL, as a deployment has: notifications
    are per database, so no other test's tasks (in schemas of the shared database) wake
    these workers, and the claims counted are this deployment's."""
    if not pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; start it (see README)")
    name = f"csbs_multi_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield (
                sa.engine.make_url(PG_ADMIN_URL)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deployment")
    bucket_name = f"csbs-multi-{uuid.uuid4().hex[:12]}"
    bucket = S3Store(
        bucket_name, prefix="repo", endpoint_url=moto_endpoint, region="us-east-1",
        **MOTO_CREDENTIALS,
    )  # fmt: skip
    bucket.create_bucket_if_missing()  # the operator makes the bucket
    query = urllib.parse.urlencode(
        {"endpoint_url": moto_endpoint, "region": "us-east-1", **MOTO_CREDENTIALS}
    )
    with own_database() as pg_url:
        dep = Deployment(root, pg_url, f"s3://{bucket_name}/repo?{query}", bucket)
        try:
            # The walk-through's first step, on the first API machine: the schema, the
            # deployment's identity and its key file; the key is then copied to the others.
            first = dep.data_dir("api-a", key=False)
            done = dep.run(["db", "upgrade"], dep.env(first))
            assert done.returncode == 0, done.stderr
            assert (first / "master.key").exists()
            apis = [dep.start_api("a"), dep.start_api("b")]
            for host in HOSTS:
                dep.start_worker(host)
            for api in apis:
                wait_ready(api.base, api.proc, timeout=180)
            for host in HOSTS:
                dep.wait_worker(host)
            r = httpx2.post(
                f"{apis[0].base}/v3/auth/tokens",
                json=password_auth("admin", ADMIN_PASSWORD, project_name="admin"),
            )
            assert r.status_code == 201, r.text
            dep.token = r.headers["X-Subject-Token"]
            dep.pid = r.json()["token"]["project"]["id"]
            yield dep
        finally:
            dep.stop()
            bucket.close()


def _refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # one line, no traceback
    assert lines[0].startswith("error: CSBS.9012: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def waiting_backup(deployment: Deployment) -> str:
    """A backup of a server on host h3, where no worker runs: it waits."""
    # through the API, no worker of h3 can check its disks
    r = deployment.call(
        "a",
        "POST",
        "/servers",
        json={"server": {"name": "vm3", "host": "h3", "disks": [{"path": "/x/vm3.img"}]}},
    )
    assert r.status_code == 400, r.text
    assert "no live worker on host h3" in r.json()["error_msg"]
    server = deployment.server_on_its_host("vm3", "h3")
    backup = deployment.protect("b", server)
    task = deployment.task_of(backup)
    assert task["status"] == "waiting" and task["route"] == "h3", task
    # its operation log says why it waits
    log = deployment.operation_log("a", backup)
    assert log["extra_info"]["waiting_reason"] == "no live worker on host h3", log
    return backup


def test_a_worker_without_the_master_key_is_refused_and_writes_nothing(
    deployment: Deployment, waiting_backup: str
) -> None:
    data_dir = deployment.data_dir("h3-no-key", key=False)
    before = deployment.blobs()
    done = deployment.run(["worker", "--host", "h3"], deployment.env(data_dir))
    line = _refusal(done)
    assert f"master key: master_key_file {data_dir / 'master.key'} does not exist" in line
    assert "the database records the deployment's key" in line
    assert not (data_dir / "master.key").exists()  # no key of its own
    task = deployment.task_of(waiting_backup)  # nothing claimed
    assert task["status"] == "waiting" and task["attempts"] == 0 and task["lease_owner"] is None
    assert deployment.blobs() == before


def test_a_worker_without_the_repository_url_is_refused_and_writes_nothing(
    deployment: Deployment, waiting_backup: str
) -> None:
    data_dir = deployment.data_dir("h3-no-repository")
    before = deployment.blobs()
    done = deployment.run(["worker", "--host", "h3"], deployment.env(data_dir, repository=False))
    line = _refusal(done)
    assert f"repository_url: file://{data_dir / 'repository'} is not the deployment's" in line
    assert "the database records s3://csbs-multi-" in line
    assert "secret_key" not in line and "testing" not in line  # no credentials in messages
    local = data_dir / "repository"
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))
    task = deployment.task_of(waiting_backup)
    assert task["status"] == "waiting" and task["attempts"] == 0 and task["lease_owner"] is None
    assert deployment.blobs() == before


def test_backups_run_on_the_host_their_server_names(deployment: Deployment) -> None:
    # h1's worker checks the paths of a server on h1, beneath its own roots
    elsewhere = deployment.disk("h2", "not-on-h1")
    r = deployment.call(
        "b",
        "POST",
        "/servers",
        json={"server": {"name": "wrong", "host": "h1", "disks": [{"path": str(elsewhere)}]}},
    )
    assert r.status_code == 400, r.text
    assert "host h1: " in r.json()["error_msg"] and "inventory roots" in r.json()["error_msg"]
    servers = {host: deployment.server("a", f"vm-{host}", host) for host in HOSTS}
    # through either API process: both enqueue for the same workers
    through = dict(zip(HOSTS, "ab", strict=True))
    backups = {host: deployment.protect(through[host], servers[host]) for host in HOSTS}
    for host, backup in backups.items():
        item = deployment.wait_backup("b", backup)
        assert item["status"] == "available", item
        task = deployment.task_of(backup)
        assert task["route"] == host and task["status"] == "success", task
        # its host's worker ran it, the other never started it
        logs = {h: (deployment.root / f"{h}.log").read_text() for h in HOSTS}
        started = [h for h in HOSTS if task["id"] in logs[h] and '"task started"' in logs[h]]
        assert started == [host], (task["id"], started)
    assert any(name.startswith("projects/") for name in deployment.blobs())


def test_a_hosts_workers_are_not_woken_by_another_hosts_tasks(deployment: Deployment) -> None:
    servers = [deployment.server("a", f"busy-{n}", "h2") for n in range(8)]
    time.sleep(0.5)
    started = time.monotonic()
    before = {host: deployment.claims(host) for host in HOSTS}
    backups = [deployment.protect("a" if n % 2 else "b", s) for n, s in enumerate(servers)]
    for backup in backups:
        assert deployment.wait_backup("b", backup)["status"] == "available"
    time.sleep(1.0)  # the last finishes' wake-ups
    after = {host: deployment.claims(host) for host in HOSTS}
    window = time.monotonic() - started
    # h2 ran 8 tasks with 2 slots: at least 4 claims that found work.
    assert after["h2"] - before["h2"] >= 4, (before, after)
    # 8 enqueues and 8 finishes on h2 woke no worker of h1: within less than its idle
    # poll, h1 claimed at most once (that poll), where one wake-up each would be 16.
    assert window < IDLE_POLL, window
    assert after["h1"] - before["h1"] <= 1, (before, after)


def test_pruning_removes_old_operation_logs_and_keeps_what_it_must(
    deployment: Deployment,
) -> None:
    """Ended tasks older than task_retention_days (1 here) go; newer ones stay, and so do
    the backups whose tasks went (a backup's record is not its task's row)."""
    with deployment.engine.connect() as conn:
        ended = conn.execute(
            sa.text(
                "SELECT id, checkpoint_item_id FROM tasks WHERE status = 'success' "
                "AND route = 'h2' ORDER BY seq"
            )
        ).all()
    assert len(ended) >= 4, ended
    old, recent = ended[:2], ended[2:]
    with deployment.engine.begin() as conn:
        for task_id, _ in old:  # as if they had ended two days ago
            conn.execute(
                sa.text(
                    "UPDATE tasks SET created_at = created_at - interval '2 days', "
                    "started_at = started_at - interval '2 days', "
                    "ended_at = ended_at - interval '2 days' WHERE id = :t"
                ),
                {"t": task_id},
            )
    deadline = time.monotonic() + 10 * PRUNE_INTERVAL + 10
    while True:
        with deployment.engine.connect() as conn:
            left = {
                row[0]
                for row in conn.execute(
                    sa.text("SELECT id FROM tasks WHERE id = ANY(:ids)"),
                    {"ids": [t for t, _ in ended]},
                )
            }
        if not left & {t for t, _ in old}:
            break
        assert time.monotonic() < deadline, "the workers did not prune"
        time.sleep(0.5)
    assert left == {t for t, _ in recent}  # the newer ones stay
    for task_id, backup in old:
        r = deployment.call("b", "GET", f"/operation_logs/{task_id}")
        assert r.status_code == 404, r.text
        assert deployment.wait_backup("b", backup)["status"] == "available"
    for task_id, _ in recent:
        assert deployment.call("b", "GET", f"/operation_logs/{task_id}").status_code == 200


def test_a_worker_that_appears_in_time_runs_the_task_that_waited_for_it(
    deployment: Deployment,
) -> None:
    server = deployment.server_on_its_host("vm4", "h4")
    backup = deployment.protect("a", server)
    time.sleep(1.0)
    assert deployment.task_of(backup)["status"] == "waiting"
    assert deployment.operation_log("b", backup)["extra_info"]["waiting_reason"] == (
        "no live worker on host h4"
    )
    deployment.start_worker("h4")
    item = deployment.wait_backup("b", backup)
    assert item["status"] == "available", item
    assert "waiting_reason" not in deployment.operation_log("b", backup)["extra_info"]
    r = httpx2.get(
        f"{deployment.apis['b'].base}/v3/workers",
        headers={"X-Auth-Token": deployment.token},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    alive = sorted(w["host"] for w in r.json()["workers"] if w["alive"])
    assert alive == ["h1", "h2", "h4"], r.json()


def test_doctor_from_another_machine_sees_the_deployment(deployment: Deployment) -> None:
    data_dir = deployment.data_dir("laptop")
    done = deployment.run(["doctor"], deployment.env(data_dir))
    lines = [x for x in done.stdout.splitlines() if not x.startswith("postgresql: autovacuum")]
    # the server of host h3, where no worker runs, is the one problem of the deployment
    assert done.returncode == 1, done.stdout
    assert len(lines) == 1 and lines[0].startswith("servers: no live worker on host h3 for vm3 ")
    # workers alive on h1, h2 and h4: no line about workers
    assert not any(line.startswith("workers:") for line in done.stdout.splitlines())


def test_a_task_for_a_host_without_a_worker_fails_at_its_start_deadline(
    deployment: Deployment, waiting_backup: str
) -> None:
    """The backup of the refusals above: no worker of h3 ever started, so one of the other
    hosts' workers fails it once the deadline has passed since its creation."""
    item = deployment.wait_backup("b", waiting_backup, timeout=START_DEADLINE + 30)
    assert item["status"] == "error", item
    task = deployment.task_of(waiting_backup)
    assert task["status"] == "failed" and task["attempts"] == 0, task
    waited = (task["ended_at"] - task["created_at"]).total_seconds()
    assert START_DEADLINE <= waited < START_DEADLINE + 15, waited
    log = deployment.operation_log("a", waiting_backup)
    message = log["error_info"]["message"]
    assert f"No live worker on host h3: the task could not start within {START_DEADLINE}" in (
        message
    ), log


def test_kill_9_of_one_api_process_leaves_the_other_serving(deployment: Deployment) -> None:
    """Runs last: api `a` does not come back."""
    stop = threading.Event()
    results: dict[str, list[tuple[float, int | str]]] = {"a": [], "b": []}
    lock = threading.Lock()

    def hammer(api: str) -> None:
        with httpx2.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.get(
                        f"{deployment.apis[api].base}/v1/{deployment.pid}/checkpoint_items",
                        headers={"X-Auth-Token": deployment.token},
                        params={"limit": 5},
                    )
                    outcome: int | str = r.status_code
                except httpx2.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    results[api].append((time.monotonic(), outcome))

    threads = [threading.Thread(target=hammer, args=(api,)) for api in ("a", "a", "b", "b", "b")]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while True:  # both answer, and calls are in flight on both
            with lock:
                answered = {api: sum(o == 200 for _, o in got) for api, got in results.items()}
            if min(answered.values()) >= 3:
                break
            assert time.monotonic() < deadline, answered
            time.sleep(0.1)
        victim = deployment.apis["a"].proc
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        # a backup through the survivor while the victim's clients fail
        server = deployment.server("b", "vm-after-kill", "h1")
        backup = deployment.protect("b", server)
        assert deployment.wait_backup("b", backup)["status"] == "available"
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    b = results["b"]
    assert b and all(outcome == 200 for _, outcome in b), {o for _, o in b}
    assert sum(1 for at, _ in b if at > killed_at) >= 10, "b stopped answering"
    a = results["a"]
    assert any(outcome == 200 for at, outcome in a if at < killed_at)
    late = [outcome for at, outcome in a if at > killed_at + 0.5]
    assert late and all(outcome != 200 for outcome in late), late
