"""Test domains on the machine's real libvirtd (qemu:///system), cleaned up on every path.

The libvirtd is shared with other tests running at once: every domain gets a unique name
(`csbs-t-<hex>`), and `LibvirtDomains` destroys and undefines each one it defined when it
closes, whatever happened. Domains need no operating system: 64 MiB, 1 vCPU, a qcow2 disk
and no graphics, `kvm` where /dev/kvm is usable, else software emulation.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

URI = "qemu:///system"
NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"


def domain_type() -> str:
    return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"


def disk_xml(path: str, target: str, fmt: str = "qcow2") -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source file='{path}'/><target dev='{target}' bus='virtio'/></disk>"
    )


NETWORK_DISK = (
    "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
    "<source protocol='nbd' name='export'><host name='127.0.0.1' port='10809'/></source>"
    "<target dev='vdz' bus='virtio'/></disk>"
)


def nova_metadata(project: str) -> str:
    return (
        f"<metadata><nova:instance xmlns:nova='{NOVA_NS}'><nova:name>vm</nova:name>"
        "<nova:owner><nova:user uuid='u1'>demo</nova:user>"
        f"<nova:project uuid='{project}'>demo</nova:project></nova:owner>"
        "</nova:instance></metadata>"
    )


class LibvirtDomains:
    """Defines domains on the real libvirtd and removes them all on `close`."""

    def __init__(self) -> None:
        self.conn: Any = libvirt.open(URI)
        # QEMU runs as its own user: the images' directory must be reachable by it
        self.dir = Path(tempfile.mkdtemp(prefix="csbs-t-", dir="/var/tmp"))
        self.dir.chmod(0o755)
        self.names: list[str] = []

    def image(self, name: str, size: str = "64M", fmt: str = "qcow2") -> str:
        path = self.dir / f"{name}.{fmt}"
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
        return str(path)

    def xml(self, name: str, domain_uuid: str, disks: list[str], metadata: str = "") -> str:
        return (
            f"<domain type='{domain_type()}'><name>{name}</name><uuid>{domain_uuid}</uuid>"
            f"{metadata}<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<devices>{''.join(disks)}</devices></domain>"
        )

    def define(
        self,
        *,
        disks: list[str] | None = None,
        metadata: str = "",
        name: str | None = None,
        domain_uuid: str | None = None,
    ) -> Any:
        """A new persistent domain (one qcow2 disk `vda` unless `disks` says otherwise)."""
        name = name or f"csbs-t-{uuidlib.uuid4().hex[:10]}"
        domain_uuid = domain_uuid or str(uuidlib.uuid4())
        if disks is None:
            disks = [disk_xml(self.image(name), "vda")]
        if name not in self.names:
            self.names.append(name)
        return self.conn.defineXML(self.xml(name, domain_uuid, disks, metadata))

    def undefine(self, dom: Any) -> None:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)

    def close(self) -> None:
        try:
            for name in self.names:
                with contextlib.suppress(libvirt.libvirtError):
                    dom = self.conn.lookupByName(name)
                    self.undefine(dom)
        finally:
            self.conn.close()
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def libvirt_domains() -> Iterator[LibvirtDomains]:
    domains = LibvirtDomains()
    try:
        yield domains
    finally:
        domains.close()
