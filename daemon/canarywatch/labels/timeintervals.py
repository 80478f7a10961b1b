"""Alertmanager ``time_intervals``: when a route is muted (or active).

Same keys, syntax and semantics as Alertmanager's ``timeinterval`` package:

- ``times``: ``[{start_time: "HH:MM", end_time: "HH:MM"}]``, end exclusive, ``24:00`` allowed;
- ``weekdays``: ``monday`` or ranges ``monday:friday`` (case-insensitive);
- ``days_of_month``: ``1``, ``1:5``, negatives count from the month's end (``-1`` is its last
  day, ``-3:-1`` its last three days);
- ``months``: names or numbers, and ranges of either (``january:march``, ``1:3``); a number
  outside 1..12 is refused (Alertmanager 0.25 accepts it: ``13`` never matches, ``0:3`` is
  ``1:3``);
- ``years``: ``2024`` or ``2024:2026``;
- ``location``: an IANA zone (``Europe/Berlin``); without one (or with ``""``), times are UTC.
  ``Local`` (Go's zone of the Alertmanager process) is refused: name the zone.

A field that is absent (or ``null``) matches everything; a present field matches when any of its
ranges does, so an empty list matches nothing (as in Alertmanager); an interval contains a moment
when every present field matches. A named interval in the config is a list of such intervals and
contains a moment when any of them does (``any_contains``).

This is the only implementation: ``canarywatch.config`` validates ``time_intervals`` with
``parse_time_interval`` (reporting ``TimeIntervalError.path`` as a key path with its line) and
``pipeline.route.Router`` mutes routes with the parsed ``TimeInterval`` objects.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from canarywatch.labels.keypath import KeyPath, format_key_path

__all__ = [
    "InclusiveRange",
    "TimeInterval",
    "TimeIntervalError",
    "TimeRange",
    "any_contains",
    "parse_time_interval",
    "parse_time_intervals",
]

_WEEKDAYS = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}
_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_VALID_TIME = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")
_INTEGER = re.compile(r"[+-]?[0-9]+")
"""What Go's ``strconv.Atoi`` accepts (Python's ``int`` also takes spaces and underscores)."""
_KEYS = frozenset({"times", "weekdays", "days_of_month", "months", "years", "location"})


class TimeIntervalError(ValueError):
    """An interval that does not parse: ``path`` names the key inside the interval's mapping
    (``("times", 0, "start_time")``), ``reason`` says what is wrong.

    ``str()`` is ``"times[0].start_time: reason"``, so callers that only want a message can use
    it as is; the config loader prefixes ``path`` with where the interval sits in the file.
    """

    def __init__(self, path: KeyPath, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{format_key_path(path)}: {reason}" if path else reason)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Minutes of the day, ``start_minute`` inclusive, ``end_minute`` exclusive (0..1440)."""

    start_minute: int
    end_minute: int

    def contains(self, minute_of_day: int) -> bool:
        return self.start_minute <= minute_of_day < self.end_minute


@dataclass(frozen=True, slots=True)
class InclusiveRange:
    begin: int
    end: int

    def contains(self, n: int) -> bool:
        return self.begin <= n <= self.end


@dataclass(frozen=True, slots=True)
class TimeInterval:
    """``None`` for a field means "not restricted"."""

    times: tuple[TimeRange, ...] | None = None
    weekdays: tuple[InclusiveRange, ...] | None = None
    """0 = Sunday .. 6 = Saturday, as in Go."""
    days_of_month: tuple[InclusiveRange, ...] | None = None
    months: tuple[InclusiveRange, ...] | None = None
    years: tuple[InclusiveRange, ...] | None = None
    location: ZoneInfo | None = None

    def contains(self, t: datetime) -> bool:
        if t.tzinfo is None:
            raise ValueError("TimeInterval.contains needs a timezone-aware datetime")
        local = t.astimezone(self.location if self.location is not None else UTC)
        if self.times is not None:
            minute = local.hour * 60 + local.minute
            if not any(r.contains(minute) for r in self.times):
                return False
        if self.days_of_month is not None and not any(
            _day_in_range(r, local) for r in self.days_of_month
        ):
            return False
        if self.months is not None and not any(r.contains(local.month) for r in self.months):
            return False
        if self.weekdays is not None:
            weekday = (local.weekday() + 1) % 7  # Python: Monday=0; Go: Sunday=0
            if not any(r.contains(weekday) for r in self.weekdays):
                return False
        return self.years is None or any(r.contains(local.year) for r in self.years)


def any_contains(intervals: Iterable[TimeInterval], t: datetime) -> bool:
    """Whether a named interval (a list of intervals) contains ``t``."""
    return any(interval.contains(t) for interval in intervals)


def _clamp(n: int, low: int, high: int) -> int:
    return max(low, min(n, high))


def _day_in_range(r: InclusiveRange, t: datetime) -> bool:
    """Alertmanager's days_of_month test, negative indices and clamping included."""
    days = calendar.monthrange(t.year, t.month)[1]
    begin = days + r.begin + 1 if r.begin < 0 else r.begin
    end = days + r.end + 1 if r.end < 0 else r.end
    if begin > days:
        return False
    begin = _clamp(begin, -days, days)
    end = _clamp(end, -days, days)
    return begin <= t.day <= end


def _parse_time(text: object, path: KeyPath) -> int:
    if not isinstance(text, str) or not _VALID_TIME.fullmatch(text):
        raise TimeIntervalError(path, f"couldn't parse timestamp {text!r}, expected HH:MM")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _parse_times(items: Sequence[object]) -> tuple[TimeRange, ...]:
    out: list[TimeRange] = []
    for index, item in enumerate(items):
        where: KeyPath = ("times", index)
        if not isinstance(item, Mapping):
            raise TimeIntervalError(where, "expected a mapping with start_time and end_time")
        unknown = set(item) - {"start_time", "end_time"}
        if unknown:
            raise TimeIntervalError(where, f"unknown keys {sorted(map(str, unknown))}")
        if not item.get("start_time") or not item.get("end_time"):
            raise TimeIntervalError(where, "both start_time and end_time must be provided")
        start = _parse_time(item["start_time"], (*where, "start_time"))
        end = _parse_time(item["end_time"], (*where, "end_time"))
        if start >= end:
            raise TimeIntervalError(where, "start time cannot be equal or greater than end time")
        out.append(TimeRange(start, end))
    return tuple(out)


def _integer(text: str, what: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid {what}")
    return int(text)


def _range(item: object, member: Callable[[str], int], where: KeyPath) -> InclusiveRange:
    if isinstance(item, bool) or not isinstance(item, str | int):
        raise TimeIntervalError(where, f"expected a string, got {type(item).__name__}")
    text = str(item).lower()
    parts = text.split(":")
    if len(parts) > 2:
        raise TimeIntervalError(where, f"couldn't parse range {text!r}, invalid format")
    try:
        begin = member(parts[0])
        end = member(parts[-1])
    except ValueError as exc:
        raise TimeIntervalError(where, str(exc)) from None
    return InclusiveRange(begin, end)


def _weekday(text: str) -> int:
    if text not in _WEEKDAYS:
        raise ValueError(f"{text!r} is not a valid weekday")
    return _WEEKDAYS[text]


def _month(text: str) -> int:
    number = _MONTHS[text] if text in _MONTHS else _integer(text, "month")
    if not 1 <= number <= 12:
        raise ValueError(f"{text!r} is not a valid month: out of range")
    return number


def _parse_ranges(
    items: Sequence[object],
    key: str,
    member: Callable[[str], int],
    problem: Callable[[InclusiveRange], str | None],
) -> tuple[InclusiveRange, ...]:
    """Each item of the list ``key`` as a range of ``member`` values; the first ``problem`` a
    range has is an error naming the item."""
    out = []
    for index, item in enumerate(items):
        where: KeyPath = (key, index)
        r = _range(item, member, where)
        why = problem(r)
        if why is not None:
            raise TimeIntervalError(where, why)
        out.append(r)
    return tuple(out)


def _weekdays_problem(r: InclusiveRange) -> str | None:
    return "start day cannot be after end day" if r.begin > r.end else None


def _days_of_month_problem(r: InclusiveRange) -> str | None:
    for day in (r.begin, r.end):
        if day == 0 or not -31 <= day <= 31:
            return f"{day} is not a valid day of the month: out of range"
    if r.begin < 0 < r.end:
        return "end day must be negative if start day is negative"
    # Negative days are checked against the shortest month (28 days), as Alertmanager does.
    check_begin = 28 + r.begin if r.begin < 0 else r.begin
    check_end = 28 + r.end if r.end < 0 else r.end
    if check_begin > check_end:
        return f"end day {r.end} is always before start day {r.begin}"
    return None


def _months_problem(r: InclusiveRange) -> str | None:
    if r.begin > r.end:
        return (
            f"end month {calendar.month_name[r.end].lower()} is before "
            f"start month {calendar.month_name[r.begin].lower()}"
        )
    return None


def _years_problem(r: InclusiveRange) -> str | None:
    return f"end year {r.end} is before start year {r.begin}" if r.begin > r.end else None


def _parse_weekdays(items: Sequence[object]) -> tuple[InclusiveRange, ...]:
    return _parse_ranges(items, "weekdays", _weekday, _weekdays_problem)


def _parse_days_of_month(items: Sequence[object]) -> tuple[InclusiveRange, ...]:
    return _parse_ranges(
        items, "days_of_month", lambda s: _integer(s, "day of the month"), _days_of_month_problem
    )


def _parse_months(items: Sequence[object]) -> tuple[InclusiveRange, ...]:
    return _parse_ranges(items, "months", _month, _months_problem)


def _parse_years(items: Sequence[object]) -> tuple[InclusiveRange, ...]:
    return _parse_ranges(items, "years", lambda s: _integer(s, "year"), _years_problem)


def _parse_location(value: object) -> ZoneInfo:
    if not isinstance(value, str):
        raise TimeIntervalError(("location",), f"expected an IANA time zone name, got {value!r}")
    if not value:
        return ZoneInfo("UTC")  # Go's time.LoadLocation(""), so Alertmanager accepts it too
    if value == "Local":
        raise TimeIntervalError(
            ("location",),
            "'Local' (the zone of the machine Alertmanager runs on) is not supported: "
            "name the zone, e.g. Europe/Berlin",
        )
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimeIntervalError(("location",), f"unknown time zone {value!r}") from exc


def _list(mapping: Mapping[str, object], key: str) -> Sequence[object] | None:
    if key not in mapping or mapping[key] is None:
        return None
    value = mapping[key]
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TimeIntervalError((key,), "expected a list")
    return value


def parse_time_interval(mapping: Mapping[str, object]) -> TimeInterval:
    """One interval from its config mapping.

    Raises ``TimeIntervalError`` (a ``ValueError``) whose ``path`` is the offending key inside
    ``mapping``, e.g. ``("times", 0, "start_time")``.
    """
    if not isinstance(mapping, Mapping):
        raise TimeIntervalError((), "a time interval must be a mapping")
    unknown = set(mapping) - _KEYS
    if unknown:
        raise TimeIntervalError((), f"unknown time interval keys {sorted(map(str, unknown))}")
    times = _list(mapping, "times")
    weekdays = _list(mapping, "weekdays")
    days = _list(mapping, "days_of_month")
    months = _list(mapping, "months")
    years = _list(mapping, "years")
    location = mapping.get("location")
    return TimeInterval(
        times=None if times is None else _parse_times(times),
        weekdays=None if weekdays is None else _parse_weekdays(weekdays),
        days_of_month=None if days is None else _parse_days_of_month(days),
        months=None if months is None else _parse_months(months),
        years=None if years is None else _parse_years(years),
        location=None if location is None else _parse_location(location),
    )


def parse_time_intervals(items: Sequence[Mapping[str, object]]) -> tuple[TimeInterval, ...]:
    """The ``time_intervals`` list of one named interval; error paths start there."""
    out = []
    for index, item in enumerate(items):
        try:
            out.append(parse_time_interval(item))
        except TimeIntervalError as exc:
            raise TimeIntervalError(("time_intervals", index, *exc.path), exc.reason) from exc
    return tuple(out)
