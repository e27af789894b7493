"""Policy schedules: the iCalendar trigger pattern, its rules, and its next run time.

A pattern is a VCALENDAR holding one VEVENT with one RRULE (spec §4.9)::

    BEGIN:VCALENDAR\\r\\nBEGIN:VEVENT\\r\\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\\r\\n
    END:VEVENT\\r\\nEND:VCALENDAR\\r\\n

Supported RRULE parts: FREQ (WEEKLY or DAILY), INTERVAL (DAILY only, 1-30), BYDAY, BYHOUR,
BYMINUTE. At most 24 runs a day and at least one hour between two runs, also across
midnight and across the end of the week or interval. Expansion is python-dateutil's rrule;
this module only reads the RRULE's parts and checks them.

Times are wall-clock times in the schedule's time zone (UTC unless the policy names one);
`next_run` is a pure function of (schedule, zone, anchor, after). On a day when the clocks
go forward, a run in the skipped hour happens at the same UTC offset as before the change
(one hour later on the wall clock); when they go back, a run in the repeated hour happens
once, at its first occurrence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
import zoneinfo

from dateutil import rrule

from csbs.domain import errors

MAX_PATTERN_LENGTH = 10240
MAX_RUNS_PER_DAY = 24
MIN_GAP = dt.timedelta(hours=1)
MAX_INTERVAL_DAYS = 30
_DAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_DAY_NAMES = tuple(_DAYS)
_OFFSET_RE = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$")
#: Midnight of a Monday, far enough in the past: DAILY;INTERVAL=n counts days from here when
#: a policy has no start of its own.
DEFAULT_ANCHOR = dt.datetime(2000, 1, 3)  # noqa: DTZ001 (a wall-clock time)


class InvalidSchedule(errors.InvalidInput):
    """The trigger pattern is not a schedule csbs can run."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"trigger pattern: {problem}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A parsed RRULE: runs on `days` (weekday numbers, Monday 0) at `times` (h, m)."""

    frequency: str  # "DAILY" or "WEEKLY"
    interval: int
    days: tuple[int, ...]
    times: tuple[tuple[int, int], ...]

    def to_pattern(self) -> str:
        """The iCalendar text for this schedule (CRLF line breaks, as clients send)."""
        parts = [f"FREQ={self.frequency}"]
        if self.interval != 1:
            parts.append(f"INTERVAL={self.interval}")
        if self.frequency == "WEEKLY":
            parts.append("BYDAY=" + ",".join(_DAY_NAMES[d] for d in self.days))
        hours = sorted({h for h, _ in self.times})
        minutes = sorted({m for _, m in self.times})
        parts.append("BYHOUR=" + ",".join(map(str, hours)))
        parts.append("BYMINUTE=" + ",".join(map(str, minutes)))
        lines = ["BEGIN:VCALENDAR", "BEGIN:VEVENT", "RRULE:" + ";".join(parts)]
        return "\r\n".join([*lines, "END:VEVENT", "END:VCALENDAR", ""])

    def rule(self, anchor: dt.datetime) -> rrule.rrule:
        """The dateutil rule, in naive wall-clock time, counted from `anchor`."""
        hours = sorted({h for h, _ in self.times})
        minutes = sorted({m for _, m in self.times})
        return rrule.rrule(
            rrule.WEEKLY if self.frequency == "WEEKLY" else rrule.DAILY,
            dtstart=anchor.replace(hour=0, minute=0, second=0, microsecond=0),
            interval=self.interval,
            byweekday=self.days if self.frequency == "WEEKLY" else None,
            byhour=hours,
            byminute=minutes,
            bysecond=0,
        )


def _ints(name: str, value: str, low: int, high: int) -> tuple[int, ...]:
    out: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if not re.fullmatch(r"[0-9]{1,5}", part) or not low <= int(part) <= high:
            raise InvalidSchedule(f"{name} must be a list of numbers from {low} to {high}")
        if int(part) in out:
            raise InvalidSchedule(f"{name} lists {part} twice")
        out.append(int(part))
    return tuple(sorted(out))


def parse(pattern: str) -> Schedule:
    """Read and check a trigger pattern.

    Raises:
        InvalidSchedule: not a VCALENDAR/VEVENT with exactly one supported RRULE, or runs
            that are more than 24 a day or less than an hour apart.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidSchedule("it is empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidSchedule(f"it is longer than {MAX_PATTERN_LENGTH} characters")
    # Clients send CRLF; people type LF; folded lines (RFC 5545 §3.1) continue with a space.
    text = pattern.replace("\r\n", "\n").replace("\r", "\n").replace("\n ", "")
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    upper = [line.upper() for line in lines]
    if not upper or upper[0] != "BEGIN:VCALENDAR" or upper[-1] != "END:VCALENDAR":
        raise InvalidSchedule("it must be a BEGIN:VCALENDAR ... END:VCALENDAR block")
    if upper.count("BEGIN:VEVENT") != 1 or upper.count("END:VEVENT") != 1:
        raise InvalidSchedule("it must hold exactly one VEVENT")
    if upper.index("BEGIN:VEVENT") > upper.index("END:VEVENT"):
        raise InvalidSchedule("END:VEVENT comes before BEGIN:VEVENT")
    start, end = upper.index("BEGIN:VEVENT"), upper.index("END:VEVENT")
    rules = [line for line in lines[start + 1 : end] if line.upper().startswith("RRULE")]
    if len(rules) != 1:
        raise InvalidSchedule("the VEVENT must hold exactly one RRULE")
    name, sep, body = rules[0].partition(":")
    if not sep or name.strip().upper() != "RRULE":
        raise InvalidSchedule("the RRULE line must read RRULE:<parts>")
    parts: dict[str, str] = {}
    for item in body.split(";"):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        key = key.strip().upper()
        if not eq or not value.strip():
            raise InvalidSchedule(f"RRULE part {item.strip()!r} has no value")
        if key in parts:
            raise InvalidSchedule(f"RRULE part {key} is given twice")
        parts[key] = value.strip().upper()
    unknown = set(parts) - {"FREQ", "INTERVAL", "BYDAY", "BYHOUR", "BYMINUTE"}
    if unknown:
        raise InvalidSchedule(
            f"RRULE part {sorted(unknown)[0]} is not supported "
            "(only FREQ, INTERVAL, BYDAY, BYHOUR, BYMINUTE)"
        )
    frequency = parts.get("FREQ")
    if frequency not in ("DAILY", "WEEKLY"):
        raise InvalidSchedule(f"FREQ must be DAILY or WEEKLY, not {frequency or 'missing'}")
    interval = 1
    if "INTERVAL" in parts:
        if frequency != "DAILY":
            raise InvalidSchedule("INTERVAL is supported with FREQ=DAILY only")
        interval = _ints("INTERVAL", parts["INTERVAL"], 1, MAX_INTERVAL_DAYS)[0]
        if "," in parts["INTERVAL"]:
            raise InvalidSchedule("INTERVAL must be one number")
    if frequency == "WEEKLY":
        if "BYDAY" not in parts:
            raise InvalidSchedule("FREQ=WEEKLY needs BYDAY")
        days: list[int] = []
        for day in parts["BYDAY"].split(","):
            day = day.strip()
            if day not in _DAYS:
                raise InvalidSchedule(f"BYDAY {day!r} is not one of {' '.join(_DAY_NAMES)}")
            if _DAYS[day] in days:
                raise InvalidSchedule(f"BYDAY lists {day} twice")
            days.append(_DAYS[day])
        weekdays = tuple(sorted(days))
    else:
        if "BYDAY" in parts:
            raise InvalidSchedule("BYDAY is supported with FREQ=WEEKLY only")
        weekdays = tuple(range(7))
    if "BYHOUR" not in parts:
        raise InvalidSchedule("BYHOUR is missing")
    hours = _ints("BYHOUR", parts["BYHOUR"], 0, 23)
    minutes = _ints("BYMINUTE", parts.get("BYMINUTE", "0"), 0, 59)
    times = tuple((h, m) for h in hours for m in minutes)
    if len(times) > MAX_RUNS_PER_DAY:
        raise InvalidSchedule(f"it runs {len(times)} times a day (at most {MAX_RUNS_PER_DAY})")
    schedule = Schedule(frequency, interval, weekdays, times)
    _check_gaps(schedule)
    return schedule


def _check_gaps(schedule: Schedule) -> None:
    """Every two consecutive runs, over one whole cycle and around its end, are ≥ 1 h apart."""
    if schedule.frequency == "WEEKLY":
        period = 7 * 1440
        points = sorted(d * 1440 + h * 60 + m for d in schedule.days for h, m in schedule.times)
    else:
        period = schedule.interval * 1440
        points = sorted(h * 60 + m for h, m in schedule.times)
    gap_minutes = int(MIN_GAP.total_seconds() // 60)
    for a, b in itertools.pairwise([*points, points[0] + period]):
        if b - a < gap_minutes:
            raise InvalidSchedule(
                f"two runs are {b - a} minutes apart "
                f"(at least {gap_minutes} minutes between runs, also across midnight)"
            )


def zone(name: str | None) -> dt.tzinfo:
    """A time zone from an IANA name (`Europe/Berlin`) or an offset (`UTC+08:00`).

    Raises:
        InvalidInput: neither.
    """
    if name is None or name.strip() == "" or name.strip().upper() in ("UTC", "GMT", "Z"):
        return dt.UTC
    text = name.strip()
    m = _OFFSET_RE.match(text.upper())
    if m:
        sign, hours, minutes = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        if hours > 14 or minutes > 59:
            raise errors.InvalidInput(f"timezone {name!r} is out of range")
        offset = dt.timedelta(hours=hours, minutes=minutes)
        return dt.timezone(-offset if sign == "-" else offset)
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise errors.InvalidInput(
            f"timezone {name!r} is neither an offset like UTC+08:00 nor a zone name"
        ) from e


def next_run(
    schedule: Schedule, tz: dt.tzinfo, after: dt.datetime, anchor: dt.datetime | None = None
) -> dt.datetime:
    """The first run strictly after `after` (aware), as an aware UTC time.

    `anchor` (naive wall-clock date) is where DAILY;INTERVAL=n starts counting days.
    """
    local_after = after.astimezone(tz).replace(tzinfo=None)
    start = anchor if anchor is not None else DEFAULT_ANCHOR
    # Begin two days early (a wall time can map before `after` around a clock change) and
    # on a day that keeps the interval's phase.
    first_day = local_after - dt.timedelta(days=2)
    if start < first_day:
        skip = (first_day - start).days // schedule.interval * schedule.interval
        start = start + dt.timedelta(days=skip)
    best: dt.datetime | None = None
    best_wall = dt.datetime.max - dt.timedelta(days=1)  # noqa: DTZ901 (wall-clock)
    for wall in schedule.rule(start):
        if wall > best_wall + dt.timedelta(hours=3):
            break  # clock changes move a run by at most a few hours
        when = wall.replace(tzinfo=tz).astimezone(dt.UTC)
        if when > after and (best is None or when < best):
            best, best_wall = when, wall
    assert best is not None  # every schedule runs at least once a week or interval
    return best


def next_runs(
    schedule: Schedule,
    tz: dt.tzinfo,
    after: dt.datetime,
    count: int,
    anchor: dt.datetime | None = None,
) -> list[dt.datetime]:
    """The first `count` runs strictly after `after` (aware), as aware UTC times."""
    runs: list[dt.datetime] = []
    for _ in range(count):
        after = next_run(schedule, tz, after, anchor)
        runs.append(after)
    return runs


def short_form(text: str) -> str:
    """A pattern from `daily 02:00`, `daily 02:00,14:00`, `every 3 days 01:30` or
    `weekly mon,thu 12:27`; anything starting with BEGIN: is taken as iCalendar text.

    Raises:
        InvalidSchedule: not one of those forms, or a schedule `parse` refuses.
    """
    stripped = text.strip()
    if stripped.upper().startswith("BEGIN:"):
        parse(text)
        return text
    words = stripped.lower().split()
    interval = 1
    if len(words) == 4 and words[0] == "every" and words[2] in ("days", "day"):
        if not words[1].isdigit():
            raise InvalidSchedule(f"{words[1]!r} is not a number of days")
        interval = int(words[1])
        words = ["daily", words[3]]
    if len(words) == 2 and words[0] == "daily":
        frequency, days, clock = "DAILY", tuple(range(7)), words[1]
    elif len(words) == 3 and words[0] == "weekly":
        frequency, clock = "WEEKLY", words[2]
        names = [d.strip()[:2].upper() for d in words[1].split(",")]
        if any(n not in _DAYS for n in names):
            raise InvalidSchedule(f"{words[1]!r} is not a list of week days (mon,tue,...)")
        days = tuple(sorted({_DAYS[n] for n in names}))
    else:
        raise InvalidSchedule(
            f"{text!r}: use 'daily HH:MM[,HH:MM]', 'every N days HH:MM', "
            "'weekly mon,thu HH:MM' or iCalendar text"
        )
    times: list[tuple[int, int]] = []
    for part in clock.split(","):
        m = re.match(r"^(\d{1,2}):(\d{2})$", part)
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise InvalidSchedule(f"{part!r} is not a time of day HH:MM")
        times.append((int(m.group(1)), int(m.group(2))))
    if len({m for _, m in times}) > 1:
        # One RRULE combines every BYHOUR with every BYMINUTE: times must share the minute.
        raise InvalidSchedule("several times of day must share the same minute")
    schedule = Schedule(frequency, interval, days, tuple(sorted(times)))
    pattern = schedule.to_pattern()
    parse(pattern)
    return pattern
