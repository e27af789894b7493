"""An environment with the production handlers running in an embedded worker."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csbs import app as composition
from csbs.app import Runtime
from csbs.blobstore.s3 import S3Store
from csbs.domain.clock import SystemClock
from csbs.domain.identity import Role
from csbs.queue import Worker
from tests.blobstore.conftest import MOTO_CREDENTIALS, moto_endpoint
from tests.support.runtime import Env, make_env

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
__all__ = ["PROVIDER", "Cloud", "moto_endpoint"]


class Cloud:
    """The API, a worker, a project with a member, and helpers to make disks and servers."""

    def __init__(self, env: Env, worker: Worker, root: Path, worker_runtime: Runtime) -> None:
        self.env = env
        self.worker = worker
        #: what the worker runs on (its repository, its services)
        self.worker_runtime = worker_runtime
        self.root = root
        self.admin = env.admin_token()
        self.token = env.add_user("mia", "alpha", Role.MEMBER)
        self.pid = env.project_id("alpha")

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"X-Auth-Token": token or self.token}

    def ext4_image(self, name: str, size_mb: int, files: dict[str, bytes]) -> Path:
        content = self.root / f"{name}.content"
        if content.exists():
            shutil.rmtree(content)
        content.mkdir()
        for rel, data in files.items():
            (content / rel).parent.mkdir(parents=True, exist_ok=True)
            (content / rel).write_bytes(data)
        image = self.root / f"{name}.img"
        built = self.root / f"{name}.img.new"
        built.unlink(missing_ok=True)
        subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-E",
                "root_owner=0:0",
                "-U",
                "clear",
                "-d",
                str(content),
                str(built),
                f"{size_mb}M",
            ],
            check=True,
            env={"E2FSPROGS_FAKE_TIME": "1700000000", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        # A registered disk stays the same file (its identity is checked at every use):
        # an image built again is copied into it, holes kept, as a guest would write it.
        subprocess.run(["cp", "--sparse=always", str(built), str(image)], check=True)
        built.unlink()
        return image

    def blank(self, name: str, size_mb: int) -> Path:
        image = self.root / f"{name}.img"
        with open(image, "wb") as f:
            f.truncate(size_mb << 20)
        return image

    def server(self, name: str, disks: list[Path], status: str = "stopped") -> dict[str, Any]:
        r = self.env.client.post(
            f"/v1/{self.pid}/servers",
            headers=self.headers(self.admin),
            json={
                "server": {
                    "name": name,
                    "status": status,
                    "disks": [{"path": str(p)} for p in disks],
                }
            },
        )
        assert r.status_code == 200, r.text
        return dict(r.json()["server"])

    def protect(self, server_id: str, **param: Any) -> Any:
        return self.env.client.post(
            f"/v1/{self.pid}/providers/{PROVIDER}/resources/{server_id}/action",
            headers=self.headers(),
            json={"protect": param},
        )

    def item_of(self, checkpoint_id: str) -> dict[str, Any]:
        r = self.env.client.get(
            f"/v1/{self.pid}/checkpoint_items?checkpoint_id={checkpoint_id}", headers=self.headers()
        )
        (item,) = r.json()["checkpoint_items"]
        return dict(item)

    def wait_backup(self, backup_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.env.client.get(
                f"/v1/{self.pid}/checkpoint_items/{backup_id}", headers=self.headers()
            )
            if r.status_code == 503:  # the database is away for a moment: ask again
                time.sleep(0.2)
                continue
            item = r.json()["checkpoint_item"]
            if item["status"] in ("available", "error"):
                return dict(item)
            time.sleep(0.1)
        raise AssertionError("backup did not finish")

    def start_restore(
        self, item: dict[str, Any], server: dict[str, Any], *, power_on: bool = False
    ) -> Any:
        """Restore the first disk backup of `item` onto the first disk of `server` (S1)."""
        vb = item["extend_info"]["volume_backups"][0]["id"]
        return self.env.client.post(
            f"/v1/{self.pid}/restores",
            headers=self.headers(),
            json={
                "restore": {
                    "provider_id": PROVIDER,
                    "checkpoint_id": item["checkpoint_id"],
                    "parameters": {
                        "checkpoint_item_id": item["id"],
                        "power_on": power_on,
                        "targets": {
                            "server_id": server["id"],
                            "volumes": [{"backup_id": vb, "volume_id": server["disks"][0]["id"]}],
                        },
                    },
                }
            },
        )

    def wait_restore(self, restore_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.env.client.get(
                f"/v1/{self.pid}/restores/{restore_id}", headers=self.headers()
            )
            if got.status_code == 503:  # the database is away for a moment: ask again
                time.sleep(0.2)
                continue
            r = got.json()["restore"]
            if r["status"] != "in_progress":
                return dict(r)
            time.sleep(0.1)
        raise AssertionError("restore did not finish")


def _cloud(tmp_path: Path, db_url: str, **settings: Any) -> Iterator[Cloud]:
    # The worker looks for new tasks every 50 ms: on SQLite no notification reaches it from
    # the API's separate runtime, and a second per task would make the tests slow.
    settings = {"worker_idle_poll_seconds": 0.05, "sweep_grace_seconds": 0, **settings}
    env = make_env(tmp_path, db_url, chunk_size=256 * 1024, **settings)
    # The handlers read real files with the real clock (the env's clock is frozen for tokens).
    runtime = composition.build(env.runtime.settings, clock=SystemClock())
    worker = composition.make_worker(runtime, concurrency=4)
    worker.start()
    root = env.runtime.settings.effective_inventory_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield Cloud(env, worker, root, runtime)
    finally:
        worker.stop(grace=5)
        runtime.close()
        env.client.close()
        env.runtime.close()


@pytest.fixture
def cloud(tmp_path: Path, db_url: str) -> Iterator[Cloud]:
    yield from _cloud(tmp_path, db_url)


@pytest.fixture
def slow_sweep_cloud(tmp_path: Path, db_url: str) -> Iterator[Cloud]:
    """A deployment whose sweep waits 2 s after a chunk's last reference, and whose
    scheduler looks for space to release every second (repository maintenance)."""
    yield from _cloud(
        tmp_path,
        db_url,
        sweep_grace_seconds=2,
        maintenance_interval_seconds=1,
        scheduler_tick_seconds=0.2,
    )


@pytest.fixture
def pg_cloud(tmp_path: Path, pg_url: str) -> Iterator[Cloud]:
    """The same on PostgreSQL only (faults of the database server itself); a deletion
    releases one reference batch per transaction, so it has many steps to be cut between."""
    yield from _cloud(tmp_path, pg_url, release_refs=1)


@pytest.fixture
def s3_cloud(tmp_path: Path, db_url: str, moto_endpoint: str) -> Iterator[Cloud]:
    """The same, with the repository on S3 (moto's server, spoken to over HTTP)."""
    bucket = f"csbs-e2e-{uuid.uuid4().hex[:12]}"
    store = S3Store(bucket, endpoint_url=moto_endpoint, region="us-east-1", **MOTO_CREDENTIALS)
    store.create_bucket_if_missing()
    store.close()
    query = urllib.parse.urlencode(
        {"endpoint_url": moto_endpoint, "region": "us-east-1", **MOTO_CREDENTIALS}
    )
    yield from _cloud(tmp_path, db_url, repository_url=f"s3://{bucket}/repo?{query}")
