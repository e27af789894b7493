"""A libvirt domain as csbs sees it: its identity, power state, owner and disks.

`parse_domain` is pure (domain XML in, `DomainInfo` out); `list_domains` asks a libvirt
connection for every domain and each disk's size. A disk csbs cannot read (a network
disk, a pool volume, a format other than qcow2 or raw...) is kept with the reason, never
dropped and never an error: the server shows it, and `check_protectable` answers false
with that reason.
"""

from __future__ import annotations

import dataclasses
import logging
import xml.etree.ElementTree as ET
from typing import Any

from csbs.domain.inventory import ServerStatus

log = logging.getLogger("csbs.hypervisor")

#: Nova writes its instance metadata in this namespace, with a version at the end (1.0,
#: 1.1, 1.2...).
NOVA_NS_PREFIX = "http://openstack.org/xmlns/libvirt/nova/"

#: Formats csbs reads and restores (through QEMU's view of the disk).
FORMATS = ("qcow2", "raw")
#: Source kinds csbs reads: an image file or a block device on the host.
KINDS = ("file", "block")

# virDomainState values (libvirt's enum, stable ABI).
_NOSTATE, _RUNNING, _BLOCKED, _PAUSED, _SHUTDOWN, _SHUTOFF, _CRASHED, _PMSUSPENDED = range(8)


@dataclasses.dataclass(frozen=True)
class DomainDisk:
    #: the guest's device name in libvirt (`vda`, `sdb`): what a backup job names
    target: str
    #: file, block, network, volume, nvme...
    kind: str
    #: the image file or device path; for a network disk `protocol://host/name`
    source: str
    #: qcow2 or raw (or what the driver names), "" when libvirt names none
    format: str
    bootable: bool
    #: its virtual size; None when libvirt could not tell now (a busy running domain)
    size_bytes: int | None = 0
    #: why csbs cannot back this disk up; None when it can
    unsupported: str | None = None


@dataclasses.dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    status: ServerStatus
    disks: tuple[DomainDisk, ...]
    #: the project Nova recorded as the instance's owner (`nova:owner/nova:project uuid`)
    nova_project: str | None = None
    persistent: bool = True


def map_state(state: int, active: bool) -> ServerStatus:
    """libvirt's virDomainState -> a server status."""
    if state == _SHUTOFF:
        return ServerStatus.STOPPED
    if state == _PAUSED:
        return ServerStatus.PAUSED
    if state == _PMSUSPENDED:
        return ServerStatus.SUSPENDED
    if state == _CRASHED:
        return ServerStatus.CRASHED
    # running, blocked on a resource, shutting down, or no state yet
    return ServerStatus.RUNNING if active else ServerStatus.STOPPED


def parse_domain(xml: str, status: ServerStatus, *, persistent: bool = True) -> DomainInfo:
    """A domain's XML (`virDomainGetXMLDesc`) -> DomainInfo, sizes 0 (see `list_domains`).

    Raises:
        ValueError: not a domain's XML (no uuid or name).
    """
    root = ET.fromstring(xml)
    uuid = (root.findtext("uuid") or "").strip().lower()
    name = (root.findtext("name") or "").strip()
    if not uuid or not name:
        raise ValueError("domain XML without uuid or name")
    disks: list[DomainDisk] = []
    boot_order = _boot_orders(root)
    for el in root.findall("./devices/disk"):
        disk = _disk(el)
        if disk is not None:
            disks.append(disk)
    if disks:
        first = min(range(len(disks)), key=lambda i: (boot_order.get(disks[i].target, 1 << 30), i))
        disks = [dataclasses.replace(d, bootable=i == first) for i, d in enumerate(disks)]
    return DomainInfo(
        uuid=uuid,
        name=name,
        status=status,
        disks=tuple(disks),
        nova_project=_nova_project(root),
        persistent=persistent,
    )


def _boot_orders(root: ET.Element) -> dict[str, int]:
    out: dict[str, int] = {}
    for el in root.findall("./devices/disk"):
        boot = el.find("boot")
        target = el.find("target")
        if boot is not None and target is not None:
            try:
                out[target.get("dev", "")] = int(boot.get("order", ""))
            except ValueError:
                pass
    return out


def _disk(el: ET.Element) -> DomainDisk | None:
    """One `<disk>` element; None for what is not a disk of the guest (cdrom, floppy)."""
    device = el.get("device", "disk")
    if device in ("cdrom", "floppy"):
        return None
    kind = el.get("type", "file")
    target_el = el.find("target")
    target = target_el.get("dev", "") if target_el is not None else ""
    driver = el.find("driver")
    fmt = driver.get("type", "") if driver is not None else ""
    source_el = el.find("source")
    source = _source(kind, source_el)
    reason: str | None = None
    if device != "disk":
        reason = f"a {device} device: csbs backs up only disks"
    elif kind not in KINDS:
        reason = f"a {kind} disk ({source or 'no source'}): csbs reads only file and block disks"
    elif not source:
        reason = "the disk has no source (an empty drive)"
    elif fmt not in FORMATS:
        reason = f"format {fmt or 'unknown'}: csbs reads only qcow2 and raw disks"
    elif not target:
        reason = "the disk has no target device"
    return DomainDisk(
        target=target, kind=kind, source=source, format=fmt, bootable=False, unsupported=reason
    )


def _source(kind: str, el: ET.Element | None) -> str:
    if el is None:
        return ""
    if kind == "file":
        return el.get("file", "")
    if kind == "block":
        return el.get("dev", "")
    if kind == "network":
        protocol = el.get("protocol", "network")
        host = el.find("host")
        where = host.get("name", "") if host is not None else ""
        if host is not None and host.get("port"):
            where += f":{host.get('port')}"
        return f"{protocol}://{where}/{el.get('name', '')}"
    if kind == "volume":
        return f"{el.get('pool', '')}/{el.get('volume', '')}"
    return el.get("file") or el.get("dev") or el.get("path") or ""


def _nova_project(root: ET.Element) -> str | None:
    metadata = root.find("metadata")
    if metadata is None:
        return None
    for instance in metadata:
        ns, _, local = (
            instance.tag[1:].partition("}") if instance.tag.startswith("{") else ("", "", "")
        )
        if local != "instance" or not ns.startswith(NOVA_NS_PREFIX):
            continue
        project = instance.find(f"{{{ns}}}owner/{{{ns}}}project")
        if project is not None and project.get("uuid"):
            return project.get("uuid", "").strip().lower() or None
    return None


def domain_info(dom: Any, stats: dict[str, Any] | None = None) -> DomainInfo:
    """A libvirt domain (`virDomain`) -> DomainInfo with each readable disk's size.

    `stats` are the domain's state and block statistics (`virConnectGetAllDomainStats`),
    read without waiting for a domain that is busy with a job: a running domain's disk whose
    size they lack has size None (unknown now, not unreadable). A stopped domain's disk
    libvirt cannot size (`virDomainGetBlockInfo`) is unsupported, with why.
    """
    import libvirt

    if stats is None:
        state = int(dom.state()[0])
        capacities: dict[str, int] = {}
    else:
        state = int(stats.get("state.state", 0))
        capacities = {
            str(stats[f"block.{i}.name"]): int(stats[f"block.{i}.capacity"])
            for i in range(int(stats.get("block.count", 0)))
            if f"block.{i}.name" in stats and f"block.{i}.capacity" in stats
        }
    active = bool(dom.isActive())
    info = parse_domain(
        dom.XMLDesc(0), map_state(state, active), persistent=bool(dom.isPersistent())
    )
    disks = []
    for d in info.disks:
        if d.unsupported is None:
            if d.target in capacities:
                d = dataclasses.replace(d, size_bytes=capacities[d.target])
            elif active:
                d = dataclasses.replace(d, size_bytes=None)
            else:
                try:
                    d = dataclasses.replace(d, size_bytes=int(dom.blockInfo(d.target)[0]))
                except libvirt.libvirtError as e:
                    d = dataclasses.replace(d, unsupported=f"libvirt cannot read it: {e}")
        disks.append(d)
    return dataclasses.replace(info, disks=tuple(disks))


def list_domains(conn: Any) -> list[DomainInfo]:
    """Every domain of a libvirt connection, defined or running, in one statistics call
    that never waits for a busy domain. A domain that vanishes while it is read is left
    out (the next listing does not have it either)."""
    import libvirt

    out = []
    stats = conn.getAllDomainStats(
        libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BLOCK,
        libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
    )
    for dom, values in stats:
        try:
            out.append(domain_info(dom, values))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue
            raise
        except (ValueError, ET.ParseError) as e:
            log.warning("domain %s left out: %s", dom.UUIDString(), e)
    return out
