"""Servers and their disks: what csbs backs up and restores onto."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re

from csbs.domain import errors

#: The one resource type csbs backs up (spec: OpenStack Nova servers).
SERVER_TYPE = "OS::Nova::Server"

#: Server names, as CSBS names: letters, digits, `_` and `-`, 1-255 characters (we also
#: allow `.` for host-style names).
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


class ServerStatus(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    #: the states of a libvirt domain beyond these two (backups need running or stopped)
    PAUSED = "paused"
    SUSPENDED = "suspended"
    CRASHED = "crashed"


class ServerSource(enum.StrEnum):
    """Where a server comes from."""

    #: an administrator registered it with its disk paths
    MANUAL = "manual"
    #: a libvirt domain a worker discovered on its host (server id = domain UUID)
    LIBVIRT = "libvirt"


@dataclasses.dataclass(frozen=True)
class Disk:
    id: str
    server_id: str
    name: str
    #: as the guest sees it, e.g. /dev/vda
    device_name: str
    #: where csbs reads and writes it: a raw image file or a block device
    path: str
    size_bytes: int
    bootable: bool
    #: what the path named at registration (`csbs.fileio.confined.Identity`); a disk whose
    #: path now names something else is refused. None: registered before this was kept.
    identity: str | None = None
    #: libvirt disks: the guest's device in libvirt (`vda`), what a backup job names
    target: str | None = None
    #: libvirt disks: qcow2 or raw (what libvirt's driver names)
    format: str | None = None
    #: libvirt disks: file, block, network... (libvirt's disk type)
    kind: str | None = None
    #: libvirt disks: the image file or device path (for a network disk, its URL)
    source: str | None = None
    #: why csbs cannot back this disk up (a network disk...); None when it can
    unsupported: str | None = None


@dataclasses.dataclass(frozen=True)
class Server:
    id: str
    #: None: a discovered domain no project has yet (an admin assigns it)
    project_id: str | None
    name: str
    #: the worker host name that can reach the disks; None = any worker
    host: str | None
    status: ServerStatus
    created_at: dt.datetime
    disks: tuple[Disk, ...]
    #: an admin allowed its disks to be regular files with several hard links
    allow_hardlinks: bool = False
    source: ServerSource = ServerSource.MANUAL
    #: libvirt servers that OpenStack Nova defined: the owner project in its metadata
    nova_project: str | None = None

    @property
    def unsupported(self) -> str | None:
        """Why this server cannot be backed up as it is (its first unsupported disk)."""
        for d in self.disks:
            if d.unsupported:
                return f"disk {d.target or d.name}: {d.unsupported}"
        return None


def check_name(kind: str, name: str) -> str:
    """Validate a server or disk name.

    Raises:
        InvalidInput: empty, too long, or characters outside [A-Za-z0-9_.-].
    """
    if not _NAME_RE.match(name):
        raise errors.InvalidInput(f"{kind} name must be 1-255 characters of [A-Za-z0-9_.-]")
    return name


class ServerNotFound(errors.InvalidInput):
    """server do not exist (HTTP 400, as the CSBS error table has it)"""

    code = "CSBS.6000"

    def __init__(self, server_id: str) -> None:
        super().__init__(f"Server ({server_id}) does not exist.")


def unsupported_type(resource_id: str, resource_type: str) -> errors.InvalidInput:
    """400 CSBS.6003: a resource of another type than `SERVER_TYPE` cannot be protected."""
    return errors.InvalidInput(
        f"Resource ({resource_id}) type ({resource_type}) is not support protection.",
        code="CSBS.6003",
    )


def unassigned(server_id: str) -> errors.InvalidInput:
    """400: a discovered server that no project has yet cannot be backed up."""
    return errors.InvalidInput(
        f"Server ({server_id}) belongs to no project yet: an administrator assigns it "
        "(csbs server assign)."
    )
