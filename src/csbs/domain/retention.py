"""Which backups of a policy to keep: a pure function of (backups, rules, now).

Rules (spec §4.9 `operation_definition`):

- `permanent` true keeps everything; with none of `max_backups`, `retention_duration_days`
  and the long-term counts set, everything is kept too.
- `max_backups` N keeps the N newest; `retention_duration_days` D keeps those made within
  the last D days. When both are set a backup must satisfy both to stay.
- `day_backups`/`week_backups`/`month_backups`/`year_backups` N keep, *in addition*, the
  newest backup of each of the last N days / ISO weeks / months / years (counted back from
  today, in the rules' time zone, today included).
- The newest backup is always kept: a policy never deletes the backup it has just made
  (this makes `max_backups` 0 mean the same as 1).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence

UNLIMITED = -1


@dataclasses.dataclass(frozen=True)
class RetentionRules:
    max_backups: int = UNLIMITED
    retention_duration_days: int = UNLIMITED
    permanent: bool = False
    day_backups: int = 0
    week_backups: int = 0
    month_backups: int = 0
    year_backups: int = 0
    tz: dt.tzinfo = dt.UTC

    @property
    def keeps_everything(self) -> bool:
        return self.permanent or (
            self.max_backups == UNLIMITED and self.retention_duration_days == UNLIMITED
        )


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A backup retention may drop: its id and when it was made (aware)."""

    id: str
    created_at: dt.datetime


def _period_keys(rules: RetentionRules) -> list[tuple[int, Callable[[dt.date], object]]]:
    return [
        (rules.day_backups, lambda d: d),
        (rules.week_backups, lambda d: d.isocalendar()[:2]),
        (rules.month_backups, lambda d: (d.year, d.month)),
        (rules.year_backups, lambda d: d.year),
    ]


def _recent_periods(today: dt.date, count: int, key: Callable[[dt.date], object]) -> set[object]:
    """The keys of the `count` periods ending with today's (at most 100 years: bounded)."""
    keys: set[object] = set()
    day = today
    while len(keys) < count and day > dt.date.min + dt.timedelta(days=1):
        keys.add(key(day))
        day -= dt.timedelta(days=1)
    return keys


def long_term_keep(
    backups: Sequence[Candidate], rules: RetentionRules, now: dt.datetime
) -> set[str]:
    """Ids kept by the day/week/month/year rules: the newest of each recent period."""
    keep: set[str] = set()
    today = now.astimezone(rules.tz).date()
    newest_first = sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)
    for count, key in _period_keys(rules):
        if count <= 0:
            continue
        periods = _recent_periods(today, count, key)
        seen: set[object] = set()
        for b in newest_first:
            k = key(b.created_at.astimezone(rules.tz).date())
            if k in periods and k not in seen:
                seen.add(k)
                keep.add(b.id)
    return keep


def expired(backups: Iterable[Candidate], rules: RetentionRules, now: dt.datetime) -> list[str]:
    """Ids of the backups the rules drop, oldest first."""
    items = sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)
    if not items or rules.keeps_everything:
        return []
    keep = {items[0].id} | long_term_keep(items, rules, now)
    drop: list[str] = []
    for rank, b in enumerate(items):
        if b.id in keep:
            continue
        too_many = rules.max_backups != UNLIMITED and rank >= rules.max_backups
        too_old = rules.retention_duration_days != UNLIMITED and (
            now - b.created_at > dt.timedelta(days=rules.retention_duration_days)
        )
        if too_many or too_old:
            drop.append(b.id)
    return list(reversed(drop))
