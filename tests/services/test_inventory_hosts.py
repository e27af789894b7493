"""Servers belong to hosts: a server must name its host once workers run on several; disk
paths are unique per host; a server registered for another host has its paths opened by a
worker of that host, under that worker's inventory roots, never this process's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csbs.domain import errors
from csbs.domain.clock import SystemClock
from csbs.fileio.confined import Rules
from csbs.queue import TaskFilter, Worker
from csbs.queue.registry import Registration
from csbs.services.inventory import CHECK_DISKS, INTERNAL_PROJECT, DiskSpec
from csbs.tasks.check_disks import CheckDisksHandler
from tests.support.runtime import Env


def _image(directory: Path, name: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    return str(path)


@pytest.fixture
def h2(env: Env, tmp_path: Path) -> Iterator[Path]:
    """A worker on host h2 whose inventory root is its own directory (not this process's)."""
    root = tmp_path / "h2-disks"
    root.mkdir()
    worker = Worker(
        env.services.tasks,
        {CHECK_DISKS: CheckDisksHandler(Rules(roots=(root,)))},
        clock=SystemClock(),
        host="h2",
    )
    worker.start()
    try:
        yield root
    finally:
        worker.stop(grace=5)


def test_a_server_on_another_host_is_checked_by_that_hosts_worker(env: Env, h2: Path) -> None:
    inventory = env.services.inventory
    inventory.local_host = "h1"
    pid = env.project_id("admin")
    here = env.runtime.settings.effective_inventory_roots[0]
    # Beneath h2's root, not this process's: accepted, with what h2's worker found.
    path = _image(h2, "vda.img")
    server = inventory.add_server(pid, "web1", [DiskSpec(path)], host="h2")
    assert server.host == "h2" and server.disks[0].path == path
    assert server.disks[0].size_bytes == 1 << 20 and server.disks[0].identity.startswith("file:")
    # Beneath this process's root but not h2's: refused with the worker's reason.
    with pytest.raises(errors.InvalidInput) as refused:
        inventory.add_server(pid, "web2", [DiskSpec(_image(here, "vdb.img"))], host="h2")
    assert refused.value.message.startswith("host h2: ")
    assert "inventory root" in refused.value.message
    # The checks leave no task behind.
    assert env.services.tasks.count(TaskFilter(project_id=INTERNAL_PROJECT)) == 0


def test_disk_paths_are_unique_per_host(env: Env, tmp_path: Path) -> None:
    """Registered where the disks are (this process's host each time, for brevity)."""
    inventory = env.services.inventory
    pid = env.project_id("admin")
    root = tmp_path / "same-layout"
    path = _image(root, "vda.img")
    inventory.rules = Rules(roots=(root,))
    inventory.local_host = "h2"
    inventory.add_server(pid, "a", [DiskSpec(path)], host="h2")
    with pytest.raises(errors.InvalidInput, match="on host h2 belongs to another server"):
        inventory.add_server(pid, "b", [DiskSpec(path)], host="h2")
    # Another hypervisor with the same layout.
    inventory.local_host = "h3"
    c = inventory.add_server(pid, "c", [DiskSpec(path)], host="h3")
    assert c.disks[0].path == path
    # A server with no host may be on any host: its path clashes with every host's.
    with pytest.raises(errors.InvalidInput, match="belongs to another server"):
        inventory.add_server(pid, "d", [DiskSpec(path)], host=None)
    assert sorted(s.name for s in inventory.servers(pid)) == ["a", "c"]


def test_a_server_must_name_its_host_once_workers_run_on_several(env: Env) -> None:
    inventory = env.services.inventory
    registry = env.services.tasks.workers
    pid = env.project_id("admin")
    here = env.runtime.settings.effective_inventory_roots[0]
    registry.register(Registration("h1:1:a", "h1", "t", 1, 1))
    inventory.local_host = "h1"
    inventory.add_server(pid, "one", [DiskSpec(_image(here, "a.img"))])  # one host: fine
    registry.register(Registration("h2:1:b", "h2", "t", 1, 1))
    with pytest.raises(errors.InvalidInput) as refused:
        inventory.add_server(pid, "two", [DiskSpec(_image(here, "b.img"))])
    assert refused.value.code == "CSBS.9001"
    assert "workers on several hosts (h1, h2)" in refused.value.message
    assert [s.name for s in inventory.servers(pid)] == ["one"]


def test_no_live_worker_on_the_host_and_a_silent_worker_are_refused(env: Env) -> None:
    inventory = env.services.inventory
    inventory.local_host = "h1"
    inventory.check_timeout = 0.5
    pid = env.project_id("admin")
    path = _image(env.runtime.settings.effective_inventory_roots[0], "a.img")
    with pytest.raises(errors.InvalidInput, match="no live worker on host h3"):
        inventory.add_server(pid, "web1", [DiskSpec(path)], host="h3")
    # Registered, but no worker runs: the call gives up in time and leaves nothing behind.
    env.services.tasks.workers.register(Registration("h4:1:a", "h4", "t", 1, 1))
    started = time.monotonic()
    with pytest.raises(errors.ServiceUnavailable, match="did not check"):
        inventory.add_server(pid, "web1", [DiskSpec(path)], host="h4")
    assert time.monotonic() - started < 5
    assert env.services.tasks.count(TaskFilter(project_id=INTERNAL_PROJECT)) == 0
    assert inventory.servers(pid) == []


def test_the_api_answers_with_the_workers_verdict(env: Env, h2: Path) -> None:
    env.services.inventory.local_host = "h1"
    pid = env.project_id("admin")
    headers = {"X-Auth-Token": env.admin_token()}
    good = _image(h2, "vda.img")
    bad = _image(env.runtime.settings.effective_inventory_roots[0], "vdb.img")

    def register(name: str, path: str, host: str | None) -> object:
        body = {"server": {"name": name, "host": host, "disks": [{"path": path}]}}
        return env.client.post(f"/v1/{pid}/servers", headers=headers, json=body)

    r = register("web1", good, "h2")
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    assert r.json()["server"]["host"] == "h2"  # type: ignore[attr-defined]
    r = register("web2", bad, "h2")
    assert r.status_code == 400, r.text  # type: ignore[attr-defined]
    fault = r.json()["badRequest"]  # type: ignore[attr-defined]
    assert fault["message"].startswith("host h2: ") and "inventory root" in fault["message"]
    assert r.json()["error_code"] == "CSBS.9001"  # type: ignore[attr-defined]
    r = register("web3", good, "h9")
    assert r.status_code == 400  # type: ignore[attr-defined]
    assert "no live worker on host h9" in r.text  # type: ignore[attr-defined]
