"""Named time intervals in Alertmanager's shape, used by ``mute_time_intervals`` and
``active_time_intervals`` on routes.

Everything is validated at load time; ``TimeIntervalSet.contains(t)`` answers "is ``t`` inside"
with Alertmanager's semantics: within one interval every given field must match (an omitted
field matches anything), and a set matches when any of its intervals does. ``times`` are
``[start, end)`` in minutes of the day in ``location`` (default UTC); negative
``days_of_month`` count from the end of the month.
"""

from __future__ import annotations

import calendar
import re
import zoneinfo
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo
from typing import Annotated, Final, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from canarywatch.config.fields import DocType, Name

_MODEL = ConfigDict(frozen=True, extra="forbid")
_WEEKDAYS: Final = (
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
)
_MONTHS: Final = tuple(m.lower() for m in calendar.month_name[1:])
_CLOCK: Final = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")


def _minute_of_day(text: str) -> int:
    if not _CLOCK.fullmatch(text):
        raise ValueError(f"{text!r} is not a time of day HH:MM between 00:00 and 24:00")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _bounds(text: str) -> tuple[str, str]:
    first, sep, last = text.partition(":")
    return (first.strip(), last.strip()) if sep else (first.strip(), first.strip())


def _named_or_number(text: str, names: tuple[str, ...], what: str, offset: int) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + offset
    if offset and text.isdigit() and offset <= int(text) < len(names) + offset:
        return int(text)
    raise ValueError(f"{text!r} is not a {what}")


def _weekday_range(text: str) -> tuple[int, int]:
    """Inclusive range, Sunday = 0 as in Alertmanager's syntax."""
    first, last = (_named_or_number(b, _WEEKDAYS, "weekday name", 0) for b in _bounds(text))
    if first > last:
        raise ValueError(f"weekday range {text!r}: start is after end (weeks start on sunday)")
    return first, last


def _month_range(text: str) -> tuple[int, int]:
    first, last = (_named_or_number(b, _MONTHS, "month name or 1-12", 1) for b in _bounds(text))
    if first > last:
        raise ValueError(f"month range {text!r}: start is after end")
    return first, last


def _day_of_month_range(text: str) -> tuple[int, int]:
    try:
        first, last = (int(b) for b in _bounds(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a day of month (1..31 or -31..-1)") from None
    for day in (first, last):
        if day == 0 or not -31 <= day <= 31:
            raise ValueError(f"day of month {day} is out of range (1..31 or -31..-1)")
    # Compare as in a 31-day month; real month lengths are applied when matching.
    if (first if first > 0 else 32 + first) > (last if last > 0 else 32 + last):
        raise ValueError(f"day of month range {text!r}: start is after end")
    return first, last


def _year_range(text: str) -> tuple[int, int]:
    bounds = _bounds(text)
    if not all(b.isdigit() for b in bounds):
        raise ValueError(f"{text!r} is not a year or year range like 2024:2026")
    first, last = (int(b) for b in bounds)
    if first > last:
        raise ValueError(f"year range {text!r}: start is after end")
    return first, last


def _location(text: str) -> str:
    if text != "Local":
        try:
            zoneinfo.ZoneInfo(text)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {text!r} (use an IANA name)") from None
    return text


def _check(parse: Callable[[str], object]) -> AfterValidator:
    def validate(value: str) -> str:
        parse(value)
        return value

    return AfterValidator(validate)


Weekdays = Annotated[str, _check(_weekday_range), DocType("weekday range")]
DaysOfMonth = Annotated[str, _check(_day_of_month_range), DocType("day-of-month range")]
Months = Annotated[str, _check(_month_range), DocType("month range")]
Years = Annotated[str, _check(_year_range), DocType("year range")]
ClockTime = Annotated[str, _check(_minute_of_day), DocType("HH:MM")]


class TimeRange(BaseModel):
    """A span of the day, ``[start_time, end_time)``."""

    model_config = _MODEL

    start_time: ClockTime = Field(description="Start of the span, HH:MM (inclusive).")
    end_time: ClockTime = Field(description="End of the span, HH:MM, up to 24:00 (exclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start_minute >= self.end_minute:
            raise ValueError(f"start_time {self.start_time} must be before end_time")
        return self

    @property
    def start_minute(self) -> int:
        return _minute_of_day(self.start_time)

    @property
    def end_minute(self) -> int:
        return _minute_of_day(self.end_time)


class TimeInterval(BaseModel):
    """One interval: every field given must match; omitted fields match anything."""

    model_config = _MODEL

    times: tuple[TimeRange, ...] = Field(default=(), description="Spans of the day.")
    weekdays: tuple[Weekdays, ...] = Field(
        default=(), description="Day names or ranges, e.g. `monday:friday`, `saturday`."
    )
    days_of_month: tuple[DaysOfMonth, ...] = Field(
        default=(), description="Days or ranges, e.g. `1:7`; negative counts from the end (`-1`)."
    )
    months: tuple[Months, ...] = Field(
        default=(), description="Month names or numbers, or ranges, e.g. `january:march`."
    )
    years: tuple[Years, ...] = Field(default=(), description="Years or ranges, e.g. `2025:2026`.")
    location: Annotated[str, AfterValidator(_location)] = Field(
        default="UTC", description="IANA time zone the fields are read in, or `Local`."
    )

    def zone(self) -> tzinfo | None:
        """The time zone; ``None`` means the host's local zone."""
        return None if self.location == "Local" else zoneinfo.ZoneInfo(self.location)

    def contains(self, at: datetime) -> bool:
        """Whether the aware datetime ``at`` falls inside this interval."""
        local = at.astimezone(self.zone())
        minute = local.hour * 60 + local.minute
        if self.times and not any(r.start_minute <= minute < r.end_minute for r in self.times):
            return False
        weekday = (local.weekday() + 1) % 7  # Python's Monday=0 -> Sunday=0
        if self.weekdays and not _in_any(weekday, map(_weekday_range, self.weekdays)):
            return False
        if self.days_of_month and not self._day_matches(local):
            return False
        if self.months and not _in_any(local.month, map(_month_range, self.months)):
            return False
        return not self.years or _in_any(local.year, map(_year_range, self.years))

    def _day_matches(self, local: datetime) -> bool:
        length = calendar.monthrange(local.year, local.month)[1]
        for first, last in map(_day_of_month_range, self.days_of_month):
            start = first if first > 0 else max(1, length + 1 + first)
            end = min(last, length) if last > 0 else length + 1 + last
            if start <= local.day <= end:
                return True
        return False


def _in_any(value: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(first <= value <= last for first, last in ranges)


class TimeIntervalSet(BaseModel):
    """A named list of intervals; routes refer to it by ``name``."""

    model_config = _MODEL

    name: Name = Field(description="Unique name routes refer to.")
    time_intervals: tuple[TimeInterval, ...] = Field(
        description="The intervals; the set matches when any of them does.", min_length=1
    )

    def contains(self, at: datetime) -> bool:
        return any(i.contains(at) for i in self.time_intervals)
