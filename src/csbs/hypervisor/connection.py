"""Opening the host's libvirt (setting `libvirt_uri`).

`auto` (the default) means `qemu:///system` where libvirt answers and no hypervisor where
it does not (no binding, no daemon): a worker on a machine without libvirt discovers
nothing and backs up files as before. `off` never connects; any other value is a libvirt
URI that must answer.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from csbs.domain import errors

log = logging.getLogger("csbs.hypervisor")

AUTO = "auto"
OFF = "off"
DEFAULT_URI = "qemu:///system"

_event_loop_lock = threading.Lock()
_event_loop_started = False


class HypervisorUnavailable(errors.ServiceUnavailable):
    """libvirt does not answer at the configured URI (or its binding is missing)."""


def binding() -> Any:
    """The libvirt module.

    Raises:
        HypervisorUnavailable: libvirt-python is not installed (extra `vm`).
    """
    try:
        import libvirt
    except ImportError as e:
        raise HypervisorUnavailable(
            "the libvirt binding is not installed (pip install 'csbs[vm]')"
        ) from e
    return libvirt


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per
    process), so that connections opened afterwards deliver domain events. Must run before
    the connection that registers callbacks is opened."""
    global _event_loop_started
    libvirt = binding()
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def resolve_uri(setting: str) -> str | None:
    """The URI to connect to for a `libvirt_uri` setting: None when off, or when `auto`
    and libvirt does not answer at `qemu:///system`."""
    if setting == OFF:
        return None
    if setting != AUTO:
        return setting
    try:
        conn = open_connection(DEFAULT_URI)
    except HypervisorUnavailable as e:
        log.info("no hypervisor: %s", e)
        return None
    conn.close()
    return DEFAULT_URI


def open_connection(uri: str) -> Any:
    """A read-write libvirt connection (`virConnect`) to `uri`.

    Raises:
        HypervisorUnavailable: no binding, or libvirt does not answer there.
    """
    libvirt = binding()
    # libvirt prints every error to stderr unless a handler takes them; ours drops them
    # (each call raises libvirtError, which is what callers act on).
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise HypervisorUnavailable(f"libvirt does not answer at {uri}: {e}") from e
