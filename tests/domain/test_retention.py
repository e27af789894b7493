"""Retention as a table: (backups, rules, now) -> the backups dropped."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from csbs.domain import schedules
from csbs.domain.policies import check_definition, retention_rules
from csbs.domain.retention import Candidate, RetentionRules, expired

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)  # a Monday


def daily(n: int, hour: int = 2) -> list[Candidate]:
    """One backup a day at `hour` UTC for the last n days: b0 is today's, b{n-1} the oldest."""
    today = NOW.replace(hour=hour, minute=0)
    return [Candidate(f"b{i}", today - dt.timedelta(days=i)) for i in range(n)]


def ids(*numbers: int) -> list[str]:
    return [f"b{i}" for i in numbers]


TABLE = [
    # (name, backups, rules, dropped oldest first)
    ("nothing set keeps all", daily(10), RetentionRules(), []),
    ("permanent keeps all", daily(10), RetentionRules(max_backups=1, permanent=True), []),
    ("count 3", daily(10), RetentionRules(max_backups=3), ids(9, 8, 7, 6, 5, 4, 3)),
    ("count more than there are", daily(3), RetentionRules(max_backups=5), []),
    ("count 0 keeps the newest", daily(3), RetentionRules(max_backups=0), ids(2, 1)),
    # b4 is 4 days and 10 hours old: past 4 days.
    ("age 4 days", daily(10), RetentionRules(retention_duration_days=4), ids(9, 8, 7, 6, 5, 4)),
    ("age 0 keeps the newest", daily(3), RetentionRules(retention_duration_days=0), ids(2, 1)),
    (
        "count and age: both must hold",
        daily(10),
        RetentionRules(max_backups=6, retention_duration_days=3),
        ids(9, 8, 7, 6, 5, 4, 3),
    ),
    ("count -1, age -1", daily(5), RetentionRules(max_backups=-1), []),
    (
        "count 2 plus 4 daily",
        daily(10),
        RetentionRules(max_backups=2, day_backups=4),
        ids(9, 8, 7, 6, 5, 4),
    ),
    (
        # 15 June 2026 is a Monday: ISO weeks 25 (b0), 24 (b1-b7), 23 (b8-b14), 22 (b15-b21).
        "count 1 plus 3 weekly",
        daily(22),
        RetentionRules(max_backups=1, week_backups=3),
        [f"b{i}" for i in range(21, 0, -1) if i not in (1, 8)],
    ),
    (
        "count 1 plus 2 monthly",
        daily(60),
        RetentionRules(max_backups=1, month_backups=2),
        # June: b0 (newest, kept anyway); May: b15 (31 May) kept; April's go.
        [f"b{i}" for i in range(59, 0, -1) if i != 15],
    ),
    (
        "yearly keeps one per year",
        [
            Candidate("new", NOW),
            Candidate("y25", NOW.replace(year=2025)),
            Candidate("y25b", NOW.replace(year=2025, month=1)),
            Candidate("y24", NOW.replace(year=2024)),
        ],
        RetentionRules(max_backups=1, year_backups=2),
        ["y24", "y25b"],
    ),
    (
        "manual deletions leave gaps: periods without backups keep nothing",
        [Candidate("a", NOW), Candidate("b", NOW - dt.timedelta(days=10))],
        RetentionRules(max_backups=1, day_backups=3),
        ["b"],
    ),
]


@pytest.mark.parametrize(("name", "backups", "rules", "dropped"), TABLE, ids=[t[0] for t in TABLE])
def test_retention_table(
    name: str, backups: list[Candidate], rules: RetentionRules, dropped: list[str]
) -> None:
    assert expired(backups, rules, NOW) == dropped
    # Order of the input does not matter.
    assert expired(list(reversed(backups)), rules, NOW) == dropped


def test_day_boundaries_follow_the_timezone() -> None:
    # 23:30 UTC on 14 June is already 15 June in UTC+08:00.
    late = Candidate("late", dt.datetime(2026, 6, 14, 23, 30, tzinfo=dt.UTC))
    early = Candidate("early", dt.datetime(2026, 6, 14, 1, 0, tzinfo=dt.UTC))
    newest = Candidate("newest", NOW)
    backups = [newest, late, early]
    utc = RetentionRules(max_backups=1, day_backups=2)
    assert expired(backups, utc, NOW) == ["early"]  # both are 14 June: keep the later one
    plus8 = RetentionRules(max_backups=1, day_backups=2, tz=schedules.zone("UTC+08:00"))
    # In UTC+8 "late" is 15 June (today, newest there is `newest`), "early" is 14 June.
    assert expired(backups, plus8, NOW) == ["late"]
    berlin = RetentionRules(max_backups=1, day_backups=2, tz=zoneinfo.ZoneInfo("Europe/Berlin"))
    assert expired(backups, berlin, NOW) == ["late"]  # 01:30 on 15 June in Berlin


def test_definition_from_the_wire() -> None:
    d = check_definition(
        {
            "max_backups": "5",
            "retention_duration_days": -1,
            "permanent": "False",
            "day_backups": 3,
            "timezone": "UTC+08:00",
            "plan_id": "ignored",
            "unknown": 1,
        }
    )
    assert d == {
        "max_backups": 5,
        "retention_duration_days": -1,
        "permanent": False,
        "day_backups": 3,
        "timezone": "UTC+08:00",
    }
    rules = retention_rules(d)
    assert rules.max_backups == 5 and rules.day_backups == 3 and not rules.keeps_everything
    assert rules.tz.utcoffset(None) == dt.timedelta(hours=8)
