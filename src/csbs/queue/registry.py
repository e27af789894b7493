"""The workers of the deployment: each registers when it starts, renews its heartbeat while
it runs and leaves when it stops (`workers`). A worker whose heartbeat is older than
`stale_seconds` is not alive: it died, or its host lost the database.

Every write is one short statement of its own (no transaction spans two), so any number of
workers and readers share the table; a heartbeat that finds its row gone (pruned while the
worker was cut off) registers it again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from csbs.domain.clock import Clock
from csbs.domain.workers import WorkerInfo
from csbs.queue.schema import workers
from csbs.sql import dialect
from csbs.sql.reads import reader

#: Rows of workers silent for this long are removed (they show as dead until then).
FORGET_AFTER = dt.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class Registration:
    """What a worker says of itself when it starts."""

    worker_id: str
    host: str
    version: str
    pid: int
    slots: int


class WorkerRegistry:
    def __init__(self, engine: sa.Engine, clock: Clock, stale_seconds: float) -> None:
        self._engine = engine
        self._clock = clock
        self.stale_seconds = stale_seconds
        self._insert = dialect.insert(engine)
        self._reader = reader(engine)

    # -- a worker's own row -----------------------------------------------------------------

    def register(self, me: Registration, running: int = 0) -> None:
        now = self._clock.now()
        values = {
            "id": me.worker_id,
            "host": me.host,
            "version": me.version[:32],
            "pid": me.pid,
            "slots": me.slots,
            "running": running,
            "started_at": now,
            "heartbeat_at": now,
        }
        stmt = self._insert(workers).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[workers.c.id],
            set_={"heartbeat_at": now, "running": running, "slots": me.slots},
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def beat(self, me: Registration, running: int) -> None:
        """Renew the heartbeat of `me` (registering it again if its row is gone)."""
        now = self._clock.now()
        with self._engine.begin() as conn:
            renewed = conn.execute(
                workers.update()
                .where(workers.c.id == me.worker_id)
                .values(heartbeat_at=now, running=running)
            ).rowcount
        if not renewed:
            self.register(me, running)

    def leave(self, worker_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(workers.delete().where(workers.c.id == worker_id))

    def forget_dead(self) -> int:
        """Remove the rows of workers silent for `FORGET_AFTER`; returns how many."""
        cutoff = self._clock.now() - FORGET_AFTER
        with self._engine.begin() as conn:
            return int(
                conn.execute(workers.delete().where(workers.c.heartbeat_at < cutoff)).rowcount
            )

    # -- reads ------------------------------------------------------------------------------

    def _alive_since(self) -> dt.datetime:
        return self._clock.now() - dt.timedelta(seconds=self.stale_seconds)

    def list(self) -> list[WorkerInfo]:
        """Every registered worker, by host then start; `alive` by the staleness setting."""
        since = self._alive_since()
        with self._reader.begin() as conn:
            rows = conn.execute(
                sa.select(workers).order_by(workers.c.host, workers.c.started_at, workers.c.id)
            ).all()
        return [
            WorkerInfo(
                id=r.id,
                host=r.host,
                version=r.version,
                pid=r.pid,
                slots=r.slots,
                running=r.running,
                started_at=r.started_at,
                heartbeat_at=r.heartbeat_at,
                alive=r.heartbeat_at >= since,
            )
            for r in rows
        ]

    def live_hosts(self) -> set[str]:
        """The hosts with at least one live worker."""
        with self._reader.begin() as conn:
            return set(
                conn.scalars(
                    sa.select(workers.c.host)
                    .where(workers.c.heartbeat_at >= self._alive_since())
                    .distinct()
                )
            )
