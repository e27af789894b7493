"""A host's libvirt domains as servers: the watcher keeps the inventory in step with the
real libvirtd (qemu:///system), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from csbs.domain.inventory import SERVER_TYPE, Server, ServerSource, ServerStatus
from csbs.hypervisor.discovery import DomainDisk, DomainInfo
from csbs.services.discovery import HostWatcher, sync_host
from csbs.services.inventory import DiskSpec
from tests.support.libvirt import (
    NETWORK_DISK,
    URI,
    LibvirtDomains,
    disk_xml,
    libvirt_domains,
    nova_metadata,
)
from tests.support.runtime import Env

T = TypeVar("T")

#: the watcher lists at least this often; the tests below see changes well before it,
#: through libvirt's lifecycle events
RESYNC = 10.0


@pytest.fixture
def vms() -> Iterator[LibvirtDomains]:
    with libvirt_domains() as d:
        yield d


@pytest.fixture
def host() -> str:
    return f"kvm-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def watcher(env: Env, host: str) -> Iterator[HostWatcher]:
    w = HostWatcher(env.services.db, env.clock, host, URI, resync_seconds=RESYNC)
    w.start()
    try:
        yield w
    finally:
        w.stop()


def _until(what: Callable[[], T | None], within: float) -> tuple[T, float]:
    """Poll `what` until it answers something; returns it and how long that took."""
    start = time.monotonic()
    while True:
        got = what()
        if got:
            return got, time.monotonic() - start
        if time.monotonic() - start > within:
            pytest.fail(f"not seen within {within} s")
        time.sleep(0.05)


def _server(env: Env, server_id: str) -> Server | None:
    return next((s for s in env.services.inventory.servers(None) if s.id == server_id), None)


def test_the_inventory_follows_defines_changes_and_undefines(
    env: Env, vms: LibvirtDomains, host: str, watcher: HostWatcher
) -> None:
    dom = vms.define()
    sid = dom.UUIDString()
    # events, not the resync, bring each change: each is seen well inside RESYNC
    server, took = _until(lambda: _server(env, sid), within=RESYNC)
    assert took < RESYNC / 2
    assert server.name == dom.name() and server.source is ServerSource.LIBVIRT
    assert server.host == host and server.project_id is None
    assert server.status is ServerStatus.STOPPED
    [vda] = server.disks
    assert (vda.target, vda.format, vda.kind, vda.size_bytes) == ("vda", "qcow2", "file", 64 << 20)
    assert vda.device_name == "/dev/vda" and vda.bootable and vda.unsupported is None
    assert vda.source is not None and vda.source.endswith(".qcow2")

    dom.create()
    _, took = _until(
        lambda: (s := _server(env, sid)) is not None and s.status is ServerStatus.RUNNING,
        within=RESYNC,
    )
    assert took < RESYNC / 2
    dom.destroy()
    _until(
        lambda: (s := _server(env, sid)) is not None and s.status is ServerStatus.STOPPED,
        within=RESYNC,
    )

    # redefined with a second disk: the first disk keeps its id
    data = vms.image("data", size="8M", fmt="raw")
    vms.define(
        name=dom.name(),
        domain_uuid=sid,
        disks=[disk_xml(vda.source, "vda"), disk_xml(data, "vdb", fmt="raw")],
    )
    changed, _ = _until(
        lambda: (s := _server(env, sid)) is not None and len(s.disks) == 2 and s, within=RESYNC
    )
    assert [(d.target, d.format, d.size_bytes) for d in changed.disks] == [
        ("vda", "qcow2", 64 << 20),
        ("vdb", "raw", 8 << 20),
    ]
    assert changed.disks[0].id == vda.id

    vms.undefine(vms.conn.lookupByUUIDString(sid))
    _, took = _until(lambda: _server(env, sid) is None, within=RESYNC)
    assert took < RESYNC / 2


def test_a_nova_domain_lands_in_its_project_without_an_admin(
    env: Env, vms: LibvirtDomains, host: str
) -> None:
    env.services.identity.create_project("tenant1")
    project = env.project_id("tenant1")
    nova = vms.define(metadata=nova_metadata(project))
    plain = vms.define()
    w = HostWatcher(env.services.db, env.clock, host, URI)
    report = w.sync_once()
    assert {nova.UUIDString(), plain.UUIDString()} <= set(report.added)
    assert [s.id for s in env.services.inventory.servers(project)] == [nova.UUIDString()]
    server = env.services.inventory.get(project, nova.UUIDString())
    assert server.nova_project == project
    # the project's members can back it up at once
    [cap] = env.services.backups.check_protectable(project, [(server.id, SERVER_TYPE)])
    assert cap.result, cap
    # the other stays unassigned, seen by no project
    unassigned = env.services.inventory.servers(None, unassigned=True)
    assert plain.UUIDString() in {s.id for s in unassigned}
    assert nova.UUIDString() not in {s.id for s in unassigned}
    # a second listing with nothing changed writes nothing
    again = w.sync_once()
    assert not ({nova.UUIDString(), plain.UUIDString()} & {*again.added, *again.changed})


def test_an_unsupported_disk_is_reported_and_check_protectable_says_why(
    env: Env, vms: LibvirtDomains, host: str
) -> None:
    dom = vms.define(disks=[disk_xml(vms.image("sys"), "vda"), NETWORK_DISK])
    HostWatcher(env.services.db, env.clock, host, URI).sync_once()
    project = env.project_id("admin")
    server = env.services.inventory.assign(dom.UUIDString(), project)
    assert [d.target for d in server.disks] == ["vda", "vdz"]
    assert server.disks[0].unsupported is None
    assert "network disk" in (server.disks[1].unsupported or "")
    [cap] = env.services.backups.check_protectable(project, [(server.id, SERVER_TYPE)])
    assert not cap.result and cap.error_code == "CSBS.6061"
    assert "vdz" in cap.error_msg and "network disk" in cap.error_msg


def test_manual_servers_and_other_hosts_are_left_alone(
    env: Env, vms: LibvirtDomains, host: str
) -> None:
    project = env.project_id("admin")
    root = env.runtime.settings.effective_inventory_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    image = root / "m.img"
    image.write_bytes(b"\0" * 4096)
    manual = env.services.inventory.add_server(
        project, "manual1", [DiskSpec(path=str(image))], host=host
    )
    dom = vms.define()
    elsewhere = f"{host}-other"
    sync_host(env.services.db, env.clock, elsewhere, [])  # nothing there
    HostWatcher(env.services.db, env.clock, host, URI).sync_once()
    assert _server(env, dom.UUIDString()) is not None
    # another host's listing (without this domain) removes nothing of this host's
    report = sync_host(env.services.db, env.clock, elsewhere, [])
    assert report.removed == ()
    assert _server(env, dom.UUIDString()) is not None
    # the host's listing without the domain removes it, never the registered server
    report = sync_host(env.services.db, env.clock, host, [])
    assert dom.UUIDString() in report.removed
    assert env.services.inventory.get(project, manual.id).source is ServerSource.MANUAL
    assert env.services.inventory.get(project, manual.id).disks[0].path == str(image)


def test_a_size_libvirt_cannot_tell_now_keeps_the_known_one(env: Env, host: str) -> None:
    def listing(size: int | None) -> list[DomainInfo]:
        disk = DomainDisk("vda", "file", "/images/a.qcow2", "qcow2", True, size_bytes=size)
        return [DomainInfo(sid, "busy", ServerStatus.RUNNING, (disk,))]

    sid = str(uuid.uuid4())
    sync_host(env.services.db, env.clock, host, listing(5 << 20))
    report = sync_host(env.services.db, env.clock, host, listing(None))
    assert report.changed == ()
    server = env.services.inventory.get(None, sid)
    assert server.disks[0].size_bytes == 5 << 20
    sync_host(env.services.db, env.clock, host, listing(6 << 20))
    assert env.services.inventory.get(None, sid).disks[0].size_bytes == 6 << 20


def test_without_events_the_resync_still_follows_within_its_bound(
    env: Env, vms: LibvirtDomains, host: str
) -> None:
    w = HostWatcher(env.services.db, env.clock, host, URI, resync_seconds=1.0)
    w._on_event = lambda *_: None  # type: ignore[method-assign]  # events lost
    w.start()
    try:
        time.sleep(0.5)
        dom = vms.define()
        _, took = _until(lambda: _server(env, dom.UUIDString()), within=RESYNC)
        assert took < 3.0
        vms.undefine(dom)
        _, took = _until(lambda: _server(env, dom.UUIDString()) is None, within=RESYNC)
        assert took < 3.0
    finally:
        w.stop()
