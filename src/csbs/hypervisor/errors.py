"""The hypervisor adapter's errors, and what a tenant reads of them.

libvirt's, QEMU's, qemu-nbd's and libnbd's messages name host paths, sockets, URIs and
QEMU's internals: an operator needs them, a tenant must not see them. A
`HypervisorError` keeps that detail as its message (for the log) and carries `tenant`,
the plain sentence a failed task records instead. Errors the bindings raise unwrapped
(`libvirt.libvirtError`, `nbd.Error`) are recognised by `wrapping_kind` without
importing the bindings: a process that never loaded them cannot have raised them.
"""

from __future__ import annotations

import sys

from csbs.domain import errors


class HypervisorError(errors.CsbsError):
    """libvirt or QEMU refused or failed an operation on the domain."""

    code = "CSBS.6042"
    tenant_message = "The hypervisor refused or failed the operation on the server."

    def __init__(
        self, message: str | None = None, *, code: str | None = None, tenant: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        #: What the server's project reads: no host paths, no hypervisor text.
        self.tenant = tenant or self.tenant_message


class NbdError(HypervisorError):
    """The NBD export of a disk failed (qemu-nbd, the connection, a read or a write)."""

    code = "CSBS.6050"
    tenant_message = "Reading or writing the server's disk through the hypervisor failed."


def wrapping_kind(e: BaseException) -> type[HypervisorError] | None:
    """The error of ours that stands for `e`, an error of the libvirt or libnbd binding
    raised unwrapped (None: `e` is not one)."""
    for module, name, kind in (
        ("libvirt", "libvirtError", HypervisorError),
        ("nbd", "Error", NbdError),
    ):
        binding = sys.modules.get(module)
        raised = getattr(binding, name, None) if binding is not None else None
        if isinstance(raised, type) and isinstance(e, raised):
            return kind
    return None
