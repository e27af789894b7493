"""Per-project quotas (CSBS Q1): reading them with their usage, setting them, enforcing them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import orm

from csbs.db.engine import Database
from csbs.db.queries import backups as backup_q
from csbs.db.queries import identity as identity_q
from csbs.db.queries import quotas as q
from csbs.domain.backups import BackupFilter
from csbs.domain.clock import Clock
from csbs.domain.quotas import (
    UNLIMITED,
    ProjectNotFound,
    Quotas,
    QuotaUsage,
    check_quota,
    exceeded,
    quota_exceeded,
)


class QuotaService:
    """Quotas of every project: its own where an admin set them, else `defaults`.

    `stored_bytes(project_id)` is what the project's repository stores after deduplication
    and compression (the repository's per-project usage); `pending(project_id)` what waits
    for release after deletions, and when it will have been released.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        defaults: Quotas,
        stored_bytes: Callable[[str], int],
        pending: Callable[[str], tuple[int, dt.datetime | None]] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._defaults = defaults
        self._stored_bytes = stored_bytes
        self._pending = pending

    def _limits(self, s: orm.Session, project_id: str) -> Quotas:
        backups, capacity_gb = q.get(s, project_id)
        return Quotas(
            backups=self._defaults.backups if backups is None else backups,
            capacity_gb=self._defaults.capacity_gb if capacity_gb is None else capacity_gb,
        )

    def usage(self, project_id: str) -> QuotaUsage:
        """Q1: the project's quotas and what it uses now."""
        with self._db.read() as s:
            limits = self._limits(s, project_id)
            backups = _retained_backups(s, project_id)
        pending, release_by = self._pending(project_id) if self._pending is not None else (0, None)
        return QuotaUsage(limits, backups, self._stored_bytes(project_id), pending, release_by)

    def set(
        self, project_id: str, *, backups: int | None = None, capacity_gb: int | None = None
    ) -> QuotaUsage:
        """Set a project's quotas (administrators only; the caller checks). -1 = unlimited;
        None leaves that quota as it is.

        Raises:
            InvalidInput: a value other than -1 or 0..2**31-1.
            ProjectNotFound: no such project.
        """
        if backups is not None:
            check_quota("backups", backups)
        if capacity_gb is not None:
            check_quota("backup_capacity", capacity_gb)
        with self._db.write() as s:
            if not identity_q.lock_project(s, project_id):
                raise ProjectNotFound(project_id)
            q.put(s, project_id, self._clock.now(), backups=backups, capacity_gb=capacity_gb)
        return self.usage(project_id)

    def check_new_backups(self, s: orm.Session, project_id: str, count: int) -> None:
        """Refuse `count` new backups of the project unless the quotas allow them.

        Call it inside the write transaction that creates the backups, before creating them:
        it locks the project's row (PostgreSQL; SQLite's write lock already serialises), so
        concurrent creations cannot both take the last slot.

        Raises:
            QuotaExceeded: 400 CSBS.9006 naming `backups` and/or `backup_capacity`.
        """
        identity_q.lock_project(s, project_id)
        limits = self._limits(s, project_id)
        if limits.backups == UNLIMITED and limits.capacity_gb == UNLIMITED:
            return
        usage = QuotaUsage(
            limits,
            _retained_backups(s, project_id) if limits.backups != UNLIMITED else 0,
            self._stored_bytes(project_id) if limits.capacity_gb != UNLIMITED else 0,
        )
        resources = exceeded(usage, count)
        if resources:
            raise quota_exceeded(resources)


def _retained_backups(s: orm.Session, project_id: str) -> int:
    """Backups the project retains: every one, whatever its status, until it is deleted."""
    return backup_q.count(s, BackupFilter(project_id=project_id))
