"""Schedules: 90 days of simulated time, exact fire times, across DST changes."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csbs.domain import schedules
from csbs.domain.schedules import InvalidSchedule

UTC = dt.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def ical(rrule: str, crlf: bool = True) -> str:
    nl = "\r\n" if crlf else "\n"
    return nl.join(
        ["BEGIN:VCALENDAR", "BEGIN:VEVENT", f"RRULE:{rrule}", "END:VEVENT", "END:VCALENDAR", ""]
    )


def fire_times(
    pattern: str, tz: dt.tzinfo, start: dt.datetime, days: int, anchor: dt.datetime | None = None
) -> list[dt.datetime]:
    """What a scheduler that ticks every minute would fire over `days`."""
    schedule = schedules.parse(pattern)
    out = []
    t = start
    end = start + dt.timedelta(days=days)
    while True:
        t = schedules.next_run(schedule, tz, t, anchor)
        if t >= end:
            return out
        out.append(t)


def test_weekly_thursday_in_utc() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
    runs = fire_times(ical("FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27"), UTC, start, 90)
    assert len(runs) == 13
    assert runs[0] == dt.datetime(2026, 1, 1, 12, 27, tzinfo=UTC)
    assert all(b - a == dt.timedelta(days=7) for a, b in itertools.pairwise(runs))
    assert all(r.weekday() == 3 and (r.hour, r.minute) == (12, 27) for r in runs)


def test_daily_twice_lf_line_breaks() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    runs = fire_times(ical("FREQ=DAILY;BYHOUR=2,14;BYMINUTE=0", crlf=False), UTC, start, 90)
    assert len(runs) == 180
    assert {(r.hour, r.minute) for r in runs} == {(2, 0), (14, 0)}


def test_daily_in_berlin_across_both_dst_changes() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    runs = fire_times(ical("FREQ=DAILY;BYHOUR=1;BYMINUTE=30"), BERLIN, start, 365)
    assert len(runs) == 365  # one run a day, every day, none doubled or lost
    local = [r.astimezone(BERLIN) for r in runs]
    assert all((t.hour, t.minute) == (1, 30) for t in local)
    # Winter 00:30 UTC, summer 23:30 UTC the day before.
    assert runs[0] == dt.datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert dt.datetime(2026, 7, 1, 23, 30, tzinfo=UTC) in runs


def test_runs_in_the_skipped_and_repeated_hours() -> None:
    # 2026-03-29 02:30 does not exist in Berlin; 2026-10-25 02:30 happens twice.
    pattern = ical("FREQ=DAILY;BYHOUR=2;BYMINUTE=30")
    spring = fire_times(pattern, BERLIN, dt.datetime(2026, 3, 28, tzinfo=UTC), 3)
    assert spring == [
        dt.datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST: one hour later on the wall
        dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]
    autumn = fire_times(pattern, BERLIN, dt.datetime(2026, 10, 24, tzinfo=UTC), 3)
    assert autumn == [
        dt.datetime(2026, 10, 24, 0, 30, tzinfo=UTC),
        dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # first 02:30 only, not both
        dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]


def test_weekly_in_new_york_over_90_days_of_dst() -> None:
    start = dt.datetime(2026, 2, 1, tzinfo=UTC)
    runs = fire_times(ical("FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=9;BYMINUTE=15"), NEW_YORK, start, 90)
    local = [r.astimezone(NEW_YORK) for r in runs]
    assert all(t.weekday() in (0, 4) and (t.hour, t.minute) == (9, 15) for t in local)
    assert len(runs) == 26
    offsets = {r.astimezone(NEW_YORK).utcoffset() for r in runs}
    assert offsets == {dt.timedelta(hours=-5), dt.timedelta(hours=-4)}


def test_fixed_offset_zone() -> None:
    tz = schedules.zone("UTC+08:00")
    runs = fire_times(
        ical("FREQ=DAILY;BYHOUR=0;BYMINUTE=0"), tz, dt.datetime(2026, 1, 1, tzinfo=UTC), 2
    )
    assert runs == [
        dt.datetime(2026, 1, 1, 16, 0, tzinfo=UTC),
        dt.datetime(2026, 1, 2, 16, 0, tzinfo=UTC),
    ]
    assert schedules.zone("UTC-03:30").utcoffset(None) == -dt.timedelta(hours=3, minutes=30)
    with pytest.raises(Exception, match="timezone"):
        schedules.zone("UTC+15:00")


def test_every_three_days_keeps_its_phase() -> None:
    anchor = dt.datetime(2026, 1, 2)  # counting from 2 January
    pattern = ical("FREQ=DAILY;INTERVAL=3;BYHOUR=4;BYMINUTE=0")
    runs = fire_times(pattern, UTC, dt.datetime(2026, 1, 1, tzinfo=UTC), 90, anchor)
    assert runs[0] == dt.datetime(2026, 1, 2, 4, 0, tzinfo=UTC)
    assert all(b - a == dt.timedelta(days=3) for a, b in itertools.pairwise(runs))
    assert len(runs) == 30
    # Asking again from any later point gives the same slots (a pure function).
    mid = dt.datetime(2026, 2, 10, 5, 0, tzinfo=UTC)
    nxt = schedules.next_run(schedules.parse(pattern), UTC, mid, anchor)
    assert nxt == min(r for r in runs if r > mid)


@given(
    st.datetimes(
        min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1), timezones=st.just(UTC)
    )
)
def test_next_run_is_the_first_slot_after(now: dt.datetime) -> None:
    schedule = schedules.parse(ical("FREQ=WEEKLY;BYDAY=TU,SA;BYHOUR=6,18;BYMINUTE=45"))
    nxt = schedules.next_run(schedule, BERLIN, now)
    assert nxt > now and nxt - now <= dt.timedelta(days=4, hours=2)
    local = nxt.astimezone(BERLIN)
    assert local.weekday() in (1, 5) and local.minute == 45 and local.hour in (6, 18)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("RRULE:FREQ=DAILY;BYHOUR=1", "BEGIN:VCALENDAR"),
        ("BEGIN:VCALENDAR\nRRULE:FREQ=DAILY;BYHOUR=1\nEND:VCALENDAR", "exactly one VEVENT"),
        (ical("FREQ=DAILY;BYHOUR=1") + "junk", "BEGIN:VCALENDAR"),
        (ical("FREQ=YEARLY;BYHOUR=1"), "FREQ must be DAILY or WEEKLY"),
        (ical("FREQ=DAILY"), "BYHOUR is missing"),
        (ical("FREQ=WEEKLY;BYHOUR=1"), "needs BYDAY"),
        (ical("FREQ=DAILY;BYHOUR=1;BYHOUR=2"), "twice"),
        (ical("FREQ=DAILY;INTERVAL=31;BYHOUR=1"), "INTERVAL"),
        (ical("FREQ=DAILY;BYHOUR=1,1"), "twice"),
        (ical("FREQ=DAILY;BYHOUR=3;BYMINUTE=0,59"), "59 minutes apart"),
        (ical("FREQ=WEEKLY;BYDAY=SU,MO;BYHOUR=23,0;BYMINUTE=30"), None),
        (ical("FREQ=WEEKLY;BYDAY=SU,MO;BYHOUR=0,23;BYMINUTE=45"), None),
        (ical("FREQ=WEEKLY;BYDAY=SU,MO;BYHOUR=23;BYMINUTE=30,59"), "29 minutes"),
        (ical("FREQ=DAILY;INTERVAL=1;BYHOUR=23,0;BYMINUTE=20,50"), "30 minutes"),
    ],
)
def test_refused_patterns_name_the_problem(text: str, problem: str | None) -> None:
    if problem is None:
        schedules.parse(text)  # exactly an hour or more apart, also over the week's end
        return
    with pytest.raises(InvalidSchedule, match=problem):
        schedules.parse(text)


@pytest.mark.parametrize(
    ("short", "rrule"),
    [
        ("daily 02:00", "FREQ=DAILY;BYHOUR=2;BYMINUTE=0"),
        ("daily 02:15,14:15", "FREQ=DAILY;BYHOUR=2,14;BYMINUTE=15"),
        ("weekly mon,thu 12:27", "FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=12;BYMINUTE=27"),
        ("every 3 days 01:30", "FREQ=DAILY;INTERVAL=3;BYHOUR=1;BYMINUTE=30"),
    ],
)
def test_short_forms(short: str, rrule: str) -> None:
    assert schedules.short_form(short) == ical(rrule)


def test_short_form_refusals() -> None:
    for bad in ("hourly", "daily 25:00", "weekly xyz 01:00", "daily 01:00,01:30"):
        with pytest.raises(InvalidSchedule):
            schedules.short_form(bad)
    text = ical("FREQ=DAILY;BYHOUR=1")
    assert schedules.short_form(text) == text
