"""`csbs.hypervisor`: a domain's XML as csbs sees it, and the real libvirtd's domains."""

from __future__ import annotations

import time
import uuid

import pytest

from csbs.domain.inventory import ServerStatus
from csbs.hypervisor import connection
from csbs.hypervisor.discovery import list_domains, map_state, parse_domain
from tests.support.libvirt import NETWORK_DISK, disk_xml, libvirt_domains, nova_metadata

UUID = "6b3a1f9e-2c4d-4e5f-8a7b-9c0d1e2f3a4b"


def _xml(devices: str, metadata: str = "") -> str:
    return (
        f"<domain type='kvm'><name>vm1</name><uuid>{UUID.upper()}</uuid>{metadata}"
        f"<devices>{devices}</devices></domain>"
    )


def test_file_and_block_disks_in_qcow2_and_raw_are_supported() -> None:
    info = parse_domain(
        _xml(
            disk_xml("/images/a.qcow2", "vda")
            + "<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
            "<source dev='/dev/vg0/data'/><target dev='vdb' bus='virtio'/></disk>"
            + "<disk type='file' device='cdrom'><source file='/iso/x.iso'/>"
            "<target dev='sda' bus='sata'/></disk>"
        ),
        ServerStatus.RUNNING,
    )
    assert info.uuid == UUID and info.name == "vm1" and info.status is ServerStatus.RUNNING
    # the cdrom is not a disk of the guest's to back up
    assert [(d.target, d.kind, d.source, d.format) for d in info.disks] == [
        ("vda", "file", "/images/a.qcow2", "qcow2"),
        ("vdb", "block", "/dev/vg0/data", "raw"),
    ]
    assert all(d.unsupported is None for d in info.disks)
    assert [d.bootable for d in info.disks] == [True, False]
    assert info.nova_project is None


@pytest.mark.parametrize(
    ("disk", "reason"),
    [
        (NETWORK_DISK, "a network disk (nbd://127.0.0.1:10809/export)"),
        (
            "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source pool='default' volume='v1'/><target dev='vdc'/></disk>",
            "a volume disk (default/v1)",
        ),
        (
            "<disk type='file' device='disk'><driver name='qemu' type='vmdk'/>"
            "<source file='/images/b.vmdk'/><target dev='vdd'/></disk>",
            "format vmdk",
        ),
        (
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            "<target dev='vde'/></disk>",
            "no source",
        ),
        (
            "<disk type='block' device='lun'><driver name='qemu' type='raw'/>"
            "<source dev='/dev/sdx'/><target dev='sdb' bus='scsi'/></disk>",
            "a lun device",
        ),
    ],
)
def test_a_disk_csbs_cannot_read_is_listed_with_the_reason(disk: str, reason: str) -> None:
    info = parse_domain(_xml(disk_xml("/images/a.qcow2", "vda") + disk), ServerStatus.STOPPED)
    assert len(info.disks) == 2
    assert info.disks[0].unsupported is None
    assert info.disks[1].unsupported is not None and reason in info.disks[1].unsupported


def test_nova_owner_is_read_from_any_version_of_novas_namespace() -> None:
    project = uuid.uuid4().hex
    info = parse_domain(_xml("", nova_metadata(project.upper())), ServerStatus.STOPPED)
    assert info.nova_project == project
    other = _xml(
        "",
        "<metadata><x:instance xmlns:x='http://example.com/not-nova'><x:owner>"
        f"<x:project uuid='{project}'/></x:owner></x:instance></metadata>",
    )
    assert parse_domain(other, ServerStatus.STOPPED).nova_project is None


def test_power_states_map_to_server_statuses() -> None:
    assert map_state(1, True) is ServerStatus.RUNNING  # running
    assert map_state(2, True) is ServerStatus.RUNNING  # blocked
    assert map_state(4, True) is ServerStatus.RUNNING  # shutting down
    assert map_state(3, True) is ServerStatus.PAUSED
    assert map_state(5, False) is ServerStatus.STOPPED
    assert map_state(6, True) is ServerStatus.CRASHED
    assert map_state(7, True) is ServerStatus.SUSPENDED
    assert map_state(0, False) is ServerStatus.STOPPED


def test_auto_finds_the_running_libvirtd_and_off_never_connects() -> None:
    assert connection.resolve_uri("auto") == "qemu:///system"
    assert connection.resolve_uri("off") is None
    with pytest.raises(connection.HypervisorUnavailable):
        connection.open_connection("qemu+unix:///system?socket=/nonexistent/libvirt-sock")


def test_the_real_libvirtd_lists_a_domain_with_its_disk_sizes_and_state() -> None:
    with libvirt_domains() as vms:
        data = vms.image("data", size="3M", fmt="raw")
        dom = vms.define(
            disks=[
                disk_xml(vms.image("sys", size="80M"), "vda"),
                disk_xml(data, "vdb", fmt="raw"),
                NETWORK_DISK,
            ]
        )
        conn = connection.open_connection("qemu:///system")
        try:
            found = {d.uuid: d for d in list_domains(conn)}[dom.UUIDString()]
            assert found.name == dom.name() and found.status is ServerStatus.STOPPED
            assert [(d.target, d.format, d.size_bytes) for d in found.disks[:2]] == [
                ("vda", "qcow2", 80 << 20),
                ("vdb", "raw", 3 << 20),
            ]
            assert found.disks[2].size_bytes == 0 and "network" in (
                found.disks[2].unsupported or ""
            )
            # a domain QEMU can start (no network disk it would connect to)
            live = vms.define()
            live.create()
            running = {d.uuid: d for d in list_domains(conn)}[live.UUIDString()]
            assert running.status is ServerStatus.RUNNING
            # the listing never waits for a busy domain: right after its start a running
            # domain's size may be unknown for a moment (None), never wrong or an error
            deadline = time.monotonic() + 10
            while running.disks[0].size_bytes is None and time.monotonic() < deadline:
                time.sleep(0.1)
                running = {d.uuid: d for d in list_domains(conn)}[live.UUIDString()]
            assert [(d.target, d.size_bytes) for d in running.disks] == [("vda", 64 << 20)]
            live.suspend()
            paused = {d.uuid: d for d in list_domains(conn)}[live.UUIDString()]
            assert paused.status is ServerStatus.PAUSED
        finally:
            conn.close()
