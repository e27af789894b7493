"""Writing a guest's bytes back into a domain's disk, whatever its format, and power-on.

The target image is served by `qemu-nbd` with its own format (qcow2 stays qcow2, raw
stays raw) and written over NBD: the repository's restore zeroes it (thin images stay
thin) and writes the chunks that hold data.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import libvirt

from csbs.domain import errors
from csbs.hypervisor.backup import _message
from csbs.hypervisor.errors import HypervisorError
from csbs.hypervisor.nbd import NbdExport, QemuNbd


@contextlib.contextmanager
def disk_target(path: str | os.PathLike[str], fmt: str) -> Iterator[NbdExport]:
    """The image at `path` (format `fmt`), open for writing the guest's bytes."""
    with QemuNbd(path, fmt, writable=True) as server, server.connect() as export:
        yield export


def create_disk(path: str | os.PathLike[str], fmt: str, size: int) -> None:
    """Create a new, empty image of `size` bytes (never over an existing file)."""
    if os.path.lexists(path):
        raise errors.InvalidInput(f"{path} already exists", code="CSBS.6044")
    if fmt not in ("raw", "qcow2"):
        raise errors.InvalidInput(f"disk format {fmt!r} is not supported", code="CSBS.6041")
    result = subprocess.run(
        ["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise HypervisorError(f"qemu-img could not create {path}: {result.stderr.strip()}")


def require_stopped(domain: Any) -> None:
    if domain.isActive():
        raise errors.InvalidState(
            f"domain {domain.name()} is running: stop it before restoring onto it",
            code="CSBS.6045",
        )


def power_on(domain: Any) -> None:
    """Start the domain (nothing if it already runs)."""
    if domain.isActive():
        return
    try:
        domain.create()
    except libvirt.libvirtError as exc:
        raise HypervisorError(
            f"domain {domain.name()} did not start: {_message(exc)}",
            tenant=f"The hypervisor did not start server {domain.name()}.",
        ) from exc
