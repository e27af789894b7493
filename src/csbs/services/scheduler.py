"""The policy scheduler: one leader across machines fires due policies.

Leadership is a row of `scheduler_leases` that the leader renews on every tick; a standby
takes it over once it has not been renewed for `lease_seconds`. Leadership only saves
work: firing itself is a compare-and-set on the policy's next run time
(`PolicyService.fire_due`), so even two schedulers that both believe they lead fire each
slot once. The leader also enqueues the repositories' maintenance once per maintenance
interval (`services/maintenance.py`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading

from csbs.db.engine import Database
from csbs.db.queries import policies as q
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.policies import PolicyRun
from csbs.services.maintenance import MaintenanceService
from csbs.services.policies import PolicyService

log = logging.getLogger("csbs.scheduler")
LEASE_NAME = "scheduler"


class Scheduler:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        policies: PolicyService,
        *,
        tick_seconds: float = 5.0,
        lease_seconds: float = 30.0,
        holder: str | None = None,
        maintenance: MaintenanceService | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._policies = policies
        self.tick_seconds = tick_seconds
        self.lease_seconds = lease_seconds
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leading = False
        self._maintenance = maintenance
        self._maintained_at: dt.datetime | None = None

    def lead(self) -> bool:
        """Take or renew leadership; whether this instance leads until the next tick."""
        now = self._clock.now()
        with self._db.write() as s:
            leading = q.take_lease(
                s, LEASE_NAME, self.holder, now, now + dt.timedelta(seconds=self.lease_seconds)
            )
        if leading != self.leading:
            log.info(
                "scheduler leadership " + ("taken" if leading else "lost"),
                extra={"holder": self.holder},
            )
        self.leading = leading
        return leading

    def tick(self) -> list[PolicyRun]:
        """One round: lead, then fire what is due. Standbys fire nothing."""
        if not self.lead():
            return []
        try:
            self.maintain()
        except Exception:
            # Policies fire whatever happens to maintenance; it is tried next interval.
            log.exception("repository maintenance could not be enqueued")
        runs = self._policies.fire_due()
        for run in runs:
            log.info(
                "policy fired",
                extra={
                    "policy_id": run.policy_id,
                    "slot_at": run.slot_at.isoformat(),
                    "checkpoint_id": run.checkpoint_id,
                    "skipped": list(run.skipped),
                },
            )
        return runs

    def maintain(self) -> list[str]:
        """Once per maintenance interval: a maintenance task for every project whose
        repository has space to release (`MaintenanceService.enqueue_due`)."""
        if self._maintenance is None:
            return []
        now = self._clock.now()
        if (
            self._maintained_at is not None
            and now - self._maintained_at < self._maintenance.interval
        ):
            return []
        self._maintained_at = now
        return self._maintenance.enqueue_due()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="csbs-scheduler", daemon=True)
        self._thread.start()
        log.info("scheduler started", extra={"holder": self.holder})

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                # A lost database is waited out; the next tick tries again.
                log.exception("scheduler tick failed")
            self._stop.wait(self.tick_seconds)

    def stop(self) -> None:
        """Stop ticking and hand leadership over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.leading:
            try:
                with self._db.write() as s:
                    q.release_lease(s, LEASE_NAME, self.holder)
            except Exception:
                log.exception("could not release scheduler leadership")
            self.leading = False
        log.info("scheduler stopped", extra={"holder": self.holder})
