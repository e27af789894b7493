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


def _recent_days(today: dt.date, count: int) -> set[object]:
    count = min(count, (today - dt.date.min).days)
    return {today - dt.timedelta(days=i) for i in range(count)}


def _recent_weeks(today: dt.date, count: int) -> set[object]:
    # Steps of 7 days land in consecutive ISO weeks.
    count = min(count, (today - dt.date.min).days // 7)
    return {(today - dt.timedelta(days=7 * i)).isocalendar()[:2] for i in range(count)}


def _recent_months(today: dt.date, count: int) -> set[object]:
    months = today.year * 12 + today.month - 1  # counted from January of year 0
    count = min(count, months - 11)  # not before January of year 1
    return {(y, m + 1) for y, m in (divmod(months - i, 12) for i in range(count))}


def _recent_years(today: dt.date, count: int) -> set[object]:
    return {today.year - i for i in range(min(count, today.year))}


#: (the rule's count, the period key of a date, the keys of the last N periods to today)
_PERIODS: tuple[
    tuple[
        Callable[[RetentionRules], int],
        Callable[[dt.date], object],
        Callable[[dt.date, int], set[object]],
    ],
    ...,
] = (
    (lambda r: r.day_backups, lambda d: d, _recent_days),
    (lambda r: r.week_backups, lambda d: d.isocalendar()[:2], _recent_weeks),
    (lambda r: r.month_backups, lambda d: (d.year, d.month), _recent_months),
    (lambda r: r.year_backups, lambda d: d.year, _recent_years),
)


def long_term_keep(
    backups: Sequence[Candidate], rules: RetentionRules, now: dt.datetime
) -> set[str]:
    """Ids kept by the day/week/month/year rules: the newest of each recent period."""
    keep: set[str] = set()
    today = now.astimezone(rules.tz).date()
    newest_first = sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)
    for count_of, key, recent in _PERIODS:
        count = count_of(rules)
        if count <= 0:
            continue
        periods = recent(today, count)
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
