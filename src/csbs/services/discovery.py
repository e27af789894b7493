"""libvirt domains as servers: a host's worker keeps the inventory in step with its libvirt.

`sync_host` writes what one listing of a host's domains found, in one transaction: a new
domain becomes a server (id = domain UUID, name = domain name, status from its power state,
its disks with their target, format and any reason csbs cannot read them), a changed one is
updated, and a server of that host whose domain is gone is removed (its backups stay). A
domain that Nova defined belongs to the project its metadata names; any other stays
unassigned (no project) until an administrator assigns it (`InventoryService.assign`).

`HostWatcher` runs the listing in a thread of `csbs worker --host NAME` (and of the worker
of `csbs serve`): at once on a libvirt lifecycle event, and every `resync_seconds` in any
case, so a removed or changed domain is followed within that bound even if an event is lost
or the connection drops (it reconnects).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy.exc

from csbs.db.engine import Database
from csbs.db.queries import inventory as q
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.inventory import Disk, Server, ServerSource
from csbs.hypervisor import connection
from csbs.hypervisor.discovery import DomainInfo, list_domains

log = logging.getLogger("csbs.discovery")


@dataclasses.dataclass(frozen=True)
class SyncReport:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def disk_locator(domain_uuid: str, target: str, index: int) -> str:
    """The `path` of a libvirt disk in the inventory (disk paths are unique): csbs reads it
    through libvirt by its target, never by a path of its own."""
    return f"libvirt:{domain_uuid}/{target or f'#{index}'}"


def _project_key(project: str) -> str:
    return project.replace("-", "").lower()


def sync_host(db: Database, clock: Clock, host: str, domains: Sequence[DomainInfo]) -> SyncReport:
    """Make the inventory's servers of `host` what `domains` says (one transaction)."""
    by_uuid = {d.uuid: d for d in domains}
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    with db.write() as s:
        known = {srv.id: srv for srv in q.libvirt_servers(s, host)}
        owners = {d.nova_project for d in domains if d.nova_project}
        wanted = {o: _project_key(o) for o in owners}
        existing = q.project_ids(s, sorted({*wanted, *wanted.values()}))
        for uuid, dom in by_uuid.items():
            current = known.get(uuid)
            if current is None:
                current = q.get_server(s, uuid, for_update=True)
                if current is not None and current.source is not ServerSource.LIBVIRT:
                    log.warning("domain %s: a registered server has its id; left alone", uuid)
                    continue
            project = current.project_id if current is not None else None
            if dom.nova_project:
                owner = dom.nova_project
                if owner in existing:
                    project = owner
                elif wanted[owner] in existing:
                    project = wanted[owner]
            server = _server(dom, host, project, current, clock)
            if current is None:
                q.add_server(s, server)
                added.append(uuid)
            elif _differs(current, server):
                q.update_libvirt_server(s, server)
                changed.append(uuid)
        for uuid in known.keys() - by_uuid.keys():
            q.delete_server(s, uuid)
            removed.append(uuid)
    return SyncReport(tuple(added), tuple(changed), tuple(removed))


def _server(
    dom: DomainInfo, host: str, project_id: str | None, current: Server | None, clock: Clock
) -> Server:
    old = {d.target: d for d in current.disks} if current is not None else {}
    disks = []
    for i, d in enumerate(dom.disks):
        before = old.get(d.target)
        disks.append(
            Disk(
                id=before.id if before is not None else new_id(),
                server_id=dom.uuid,
                name=f"{dom.name}-{d.target or i}"[:255],
                device_name=f"/dev/{d.target}" if d.target else "",
                path=disk_locator(dom.uuid, d.target, i),
                size_bytes=_size(d.size_bytes, before),
                bootable=d.bootable,
                target=d.target,
                format=d.format or None,
                kind=d.kind,
                source=d.source[:4096] or None,
                unsupported=d.unsupported[:1024] if d.unsupported else None,
            )
        )
    return Server(
        id=dom.uuid,
        project_id=project_id,
        name=dom.name[:255],
        host=host,
        status=dom.status,
        created_at=current.created_at if current is not None else clock.now(),
        disks=tuple(disks),
        source=ServerSource.LIBVIRT,
        nova_project=dom.nova_project,
    )


def _size(found: int | None, before: Disk | None) -> int:
    """A disk's size: as found, or as known before when libvirt could not tell now."""
    if found is not None:
        return found
    return before.size_bytes if before is not None else 0


def _differs(a: Server, b: Server) -> bool:
    return dataclasses.replace(a, created_at=b.created_at) != b


class HostWatcher:
    """Keeps the inventory in step with one host's libvirt, in a thread of its own."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        host: str,
        uri: str,
        *,
        resync_seconds: float = 5.0,
        on_sync: Callable[[SyncReport], None] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self.host = host
        self.uri = uri
        self.resync_seconds = resync_seconds
        self._on_sync = on_sync
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._callback: int | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="libvirt-discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._disconnect()

    def sync_once(self) -> SyncReport:
        """List the host's domains now and write what changed."""
        if self._conn is None:
            self._connect()
        report = sync_host(self._db, self._clock, self.host, list_domains(self._conn))
        if report.added or report.changed or report.removed:
            log.info(
                "host %s: %d domains added, %d changed, %d removed",
                self.host,
                len(report.added),
                len(report.changed),
                len(report.removed),
            )
        if self._on_sync is not None:
            self._on_sync(report)
        return report

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.sync_once()
            except sqlalchemy.exc.IntegrityError:
                # another worker of the same host name added a domain first: list again
                log.info("host %s: another worker wrote these domains first", self.host)
                if not self._stopping.wait(0.2):
                    self._wake.set()
            except Exception:
                log.exception("host %s: listing libvirt's domains failed", self.host)
                self._disconnect()
            self._wake.wait(self.resync_seconds)

    def _connect(self) -> None:
        libvirt = connection.binding()
        connection.start_event_loop()  # before the connection whose events it delivers
        conn = connection.open_connection(self.uri)
        self._callback = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
        )
        conn.registerCloseCallback(lambda *_: self._wake.set(), None)
        self._conn = conn

    def _on_event(self, *_args: Any) -> None:
        self._wake.set()

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._callback is not None:
                conn.domainEventDeregisterAny(self._callback)
            conn.close()
        except Exception:
            log.debug("closing the libvirt connection failed", exc_info=True)
        self._callback = None
