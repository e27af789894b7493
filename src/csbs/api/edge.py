"""The state of the HTTP edge: what the API knows of its deployment, whether the process is
draining, and who counts its calls in flight. None of it is a use case's concern, so it is
handed to `create_app` beside the services, not inside them."""

from __future__ import annotations

import dataclasses
import threading
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class ApiOptions:
    """What the HTTP layer needs to know about its deployment."""

    region: str
    public_url: str | None
    max_body_bytes: int
    #: threads that run the route functions (which block on the database)
    threads: int


class Lifecycle:
    """Whether the process is draining for shutdown; readable from every thread."""

    def __init__(self) -> None:
        self._draining = threading.Event()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start_draining(self) -> None:
        self._draining.set()


class CallCounter(Protocol):
    """Told of every call the API starts and ends (the embedded worker yields to them)."""

    def call_started(self) -> None: ...

    def call_ended(self) -> None: ...


class _Uncounted:
    def call_started(self) -> None:
        return None

    def call_ended(self) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class ApiEdge:
    options: ApiOptions
    lifecycle: Lifecycle = dataclasses.field(default_factory=Lifecycle)
    calls: CallCounter = dataclasses.field(default_factory=_Uncounted)


#: The ASGI scope key under which the server puts the `LocalPeer` of a call that came over
#: `csbs serve`'s control socket from an admitted process (decision 0018). Only the server
#: sets it, never from anything the caller sends.
LOCAL_PEER = "csbs.local_peer"


@dataclasses.dataclass(frozen=True)
class LocalPeer:
    """The process at the other end of the control socket, as the kernel tells it."""

    pid: int
    uid: int
    gid: int
