"""Alertmanager time_intervals: parsing and containment at fixed moments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from canarywatch.labels.keypath import format_key_path
from canarywatch.labels.timeintervals import (
    InclusiveRange,
    TimeInterval,
    TimeIntervalError,
    TimeRange,
    any_contains,
    parse_time_interval,
    parse_time_intervals,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


BUSINESS_HOURS = {
    "times": [{"start_time": "09:00", "end_time": "17:00"}],
    "weekdays": ["monday:friday"],
}


def test_parse_full_interval() -> None:
    interval = parse_time_interval(
        {
            "times": [{"start_time": "00:00", "end_time": "24:00"}],
            "weekdays": ["Saturday", "monday:wednesday"],
            "days_of_month": ["1:5", "-3:-1", 10],
            "months": ["january:march", "12"],
            "years": ["2024:2026"],
            "location": "Europe/Berlin",
        }
    )
    assert interval.times == (TimeRange(0, 1440),)
    assert interval.weekdays == (InclusiveRange(6, 6), InclusiveRange(1, 3))
    assert interval.days_of_month == (
        InclusiveRange(1, 5),
        InclusiveRange(-3, -1),
        InclusiveRange(10, 10),
    )
    assert interval.months == (InclusiveRange(1, 3), InclusiveRange(12, 12))
    assert interval.years == (InclusiveRange(2024, 2026),)
    assert interval.location is not None
    assert interval.location.key == "Europe/Berlin"


@pytest.mark.parametrize(
    ("mapping", "fault"),
    [
        ({"times": [{"start_time": "09:00"}]}, "both start_time and end_time"),
        ({"times": [{"start_time": "17:00", "end_time": "09:00"}]}, "cannot be equal or greater"),
        ({"times": [{"start_time": "09:00", "end_time": "09:00"}]}, "cannot be equal or greater"),
        ({"times": [{"start_time": "9:00", "end_time": "10:00"}]}, "couldn't parse timestamp"),
        ({"times": [{"start_time": "24:01", "end_time": "24:30"}]}, "couldn't parse timestamp"),
        ({"times": [{"start_time": "00:00", "end_time": "25:00"}]}, "times[0].end_time"),
        ({"times": [{"start_time": "00:00", "end_time": "01:00", "x": 1}]}, "unknown keys"),
        ({"weekdays": ["funday"]}, "not a valid weekday"),
        ({"weekdays": ["friday:monday"]}, "start day cannot be after end day"),
        ({"weekdays": ["saturday:sunday"]}, "start day cannot be after end day"),  # Sunday is 0
        ({"weekdays": ["monday:tuesday:friday"]}, "invalid format"),
        ({"weekdays": ["monday:"]}, "not a valid weekday"),
        ({"days_of_month": ["0"]}, "out of range"),
        ({"days_of_month": ["32"]}, "out of range"),
        ({"days_of_month": ["-32:-1"]}, "out of range"),
        ({"days_of_month": ["-5:5"]}, "end day must be negative"),
        ({"days_of_month": ["10:2"]}, "always before start day"),
        ({"days_of_month": ["-1:-3"]}, "always before start day"),
        ({"days_of_month": ["1_0"]}, "not a valid day of the month"),
        ({"months": ["march:january"]}, "end month january is before start month march"),
        ({"months": ["13"]}, "out of range"),
        ({"months": ["smarch"]}, "not a valid month"),
        ({"years": ["2026:2024"]}, "end year 2024 is before start year 2026"),
        ({"years": [" 2024"]}, "not a valid year"),
        ({"location": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"location": 5}, "expected an IANA time zone name"),
        ({"location": "Local"}, "name the zone"),
        ({"weekdays": "monday"}, "expected a list"),
        ({"weekday": ["monday"]}, "unknown time interval keys ['weekday']"),
        ({"years": [True]}, "expected a string"),
    ],
)
def test_parse_rejects(mapping: dict[str, object], fault: str) -> None:
    with pytest.raises(ValueError, match=fault.replace("[", r"\[").replace("]", r"\]")):
        parse_time_interval(mapping)


def test_parse_list_names_the_item() -> None:
    with pytest.raises(ValueError, match=r"time_intervals\[1\]\.weekdays\[0\]: ") as caught:
        parse_time_intervals([BUSINESS_HOURS, {"weekdays": ["noday"]}])
    assert isinstance(caught.value, TimeIntervalError)
    assert caught.value.path == ("time_intervals", 1, "weekdays", 0)
    assert caught.value.reason == "'noday' is not a valid weekday"


@pytest.mark.parametrize(
    ("mapping", "path"),
    [
        ({"times": [{"start_time": "25:00", "end_time": "26:00"}]}, ("times", 0, "start_time")),
        ({"times": [{"start_time": "10:00", "end_time": "09:00"}]}, ("times", 0)),
        ({"days_of_month": ["1", "0"]}, ("days_of_month", 1)),
        ({"months": "june"}, ("months",)),
        ({"location": "Mars/Olympus_Mons"}, ("location",)),
        ({"weekday": ["monday"]}, ()),
    ],
)
def test_errors_carry_the_key_path(mapping: dict[str, object], path: tuple[str | int, ...]) -> None:
    """The config loader turns ``path`` into a key path with a line number."""
    with pytest.raises(TimeIntervalError) as caught:
        parse_time_interval(mapping)
    error = caught.value
    assert error.path == path
    assert str(error) == (f"{format_key_path(path)}: {error.reason}" if path else error.reason)


def test_empty_interval_contains_everything() -> None:
    assert TimeInterval().contains(utc(2025, 1, 1, 0, 0))
    assert parse_time_interval({}).contains(utc(1999, 12, 31, 23, 59))


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (utc(2025, 6, 2, 9, 0), True),  # Monday 09:00: start is inclusive
        (utc(2025, 6, 2, 16, 59), True),
        (utc(2025, 6, 2, 17, 0), False),  # end is exclusive
        (utc(2025, 6, 2, 8, 59), False),
        (utc(2025, 6, 6, 12, 0), True),  # Friday
        (utc(2025, 6, 7, 12, 0), False),  # Saturday
        (utc(2025, 6, 8, 12, 0), False),  # Sunday
    ],
)
def test_business_hours(moment: datetime, inside: bool) -> None:
    assert parse_time_interval(BUSINESS_HOURS).contains(moment) is inside


def test_sunday_is_day_zero() -> None:
    sunday = parse_time_interval({"weekdays": ["sunday"]})
    assert sunday.contains(utc(2025, 6, 8, 0, 0))
    assert not sunday.contains(utc(2025, 6, 9, 0, 0))


def test_location_converts_before_testing() -> None:
    berlin = parse_time_interval({**BUSINESS_HOURS, "location": "Europe/Berlin"})
    # 07:30 UTC is 09:30 in Berlin in summer (CEST), 08:30 in winter (CET).
    assert berlin.contains(utc(2025, 6, 2, 7, 30))
    assert not berlin.contains(utc(2025, 1, 6, 7, 30))
    assert berlin.contains(utc(2025, 1, 6, 8, 30))
    # Friday 23:30 UTC is Saturday in Berlin.
    assert not berlin.contains(utc(2025, 6, 6, 23, 30))
    # A non-UTC aware input is the same instant.
    tokyo = timezone(timedelta(hours=9))
    assert berlin.contains(datetime(2025, 6, 2, 16, 30, tzinfo=tokyo))


def test_without_location_times_are_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    interval = parse_time_interval(BUSINESS_HOURS)
    assert not interval.contains(datetime(2025, 6, 2, 10, 0, tzinfo=plus_two))  # 08:00 UTC
    assert interval.contains(datetime(2025, 6, 2, 11, 0, tzinfo=plus_two))


def test_empty_location_is_utc_as_in_alertmanager() -> None:
    """Go's ``time.LoadLocation("")`` is UTC; ``amtool check-config`` accepts it."""
    plus_two = timezone(timedelta(hours=2))
    interval = parse_time_interval({**BUSINESS_HOURS, "location": ""})
    assert not interval.contains(datetime(2025, 6, 2, 10, 0, tzinfo=plus_two))  # 08:00 UTC
    assert interval.contains(datetime(2025, 6, 2, 11, 0, tzinfo=plus_two))


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeInterval().contains(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("days", "moment", "inside"),
    [
        (["-1"], utc(2024, 2, 29), True),  # leap February's last day
        (["-1"], utc(2024, 2, 28), False),
        (["-1"], utc(2025, 2, 28), True),
        (["-3:-1"], utc(2025, 4, 28), True),  # April: 28, 29, 30
        (["-3:-1"], utc(2025, 4, 27), False),
        (["1:5"], utc(2025, 4, 5), True),
        (["1:5"], utc(2025, 4, 6), False),
        (["31"], utc(2025, 4, 30), False),  # beyond the month's end: skipped
        (["31"], utc(2025, 5, 31), True),
        (["25:31"], utc(2025, 2, 28), True),  # clamped to the month's end
        # In a 28-day month -31:-30 resolves to -2:-1: no day (Alertmanager's arithmetic).
        (["-31:-30"], utc(2025, 2, 1), False),
        (["-31:-30"], utc(2025, 3, 1), True),
        (["-31:-30"], utc(2025, 3, 2), True),
        (["-31:-30"], utc(2025, 3, 3), False),
    ],
)
def test_days_of_month(days: list[str], moment: datetime, inside: bool) -> None:
    assert parse_time_interval({"days_of_month": days}).contains(moment) is inside


def test_negative_days_count_calendar_days_across_a_dst_change() -> None:
    """README, differences: Alertmanager 0.25 counts March in Berlin (23-hour day) as 30 days,
    so its ``-1`` is 30 March; canarywatch counts the calendar, as Alertmanager's later fix."""
    last = parse_time_interval({"days_of_month": ["-1"], "location": "Europe/Berlin"})
    assert last.contains(datetime(2026, 3, 31, 10, 0, tzinfo=UTC))
    assert not last.contains(datetime(2026, 3, 30, 10, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("mapping", "moment", "inside"),
    [
        ({"months": ["december", "january:february"]}, utc(2025, 12, 24), True),
        ({"months": ["december", "january:february"]}, utc(2025, 2, 14), True),
        ({"months": ["december", "january:february"]}, utc(2025, 3, 1), False),
        ({"months": ["6:8"]}, utc(2025, 7, 1), True),
        ({"years": ["2024:2025"]}, utc(2025, 12, 31, 23, 59), True),
        ({"years": ["2024:2025"]}, utc(2026, 1, 1), False),
        ({"years": ["2023"]}, utc(2023, 5, 5), True),
    ],
)
def test_months_and_years(mapping: dict[str, object], moment: datetime, inside: bool) -> None:
    assert parse_time_interval(mapping).contains(moment) is inside


def test_any_contains_is_a_union() -> None:
    named = parse_time_intervals([{"weekdays": ["saturday", "sunday"]}, {"months": ["december"]}])
    assert any_contains(named, utc(2025, 6, 7))  # Saturday in June
    assert any_contains(named, utc(2025, 12, 3))  # Wednesday in December
    assert not any_contains(named, utc(2025, 6, 4))  # Wednesday in June
    assert not any_contains((), utc(2025, 6, 4))


def test_named_intervals_like_alertmanager() -> None:
    """Moved from the config tests: a zoned office-hours set and a month-end set."""
    office = parse_time_intervals(
        [
            {
                "times": [{"start_time": "09:00", "end_time": "17:00"}],
                "weekdays": ["monday:friday"],
                "location": "Europe/Berlin",
            }
        ]
    )
    # 2025-06-02 is a Monday; Berlin is UTC+2 in June.
    assert any_contains(office, utc(2025, 6, 2, 7, 0))
    assert not any_contains(office, utc(2025, 6, 2, 15, 0))
    assert not any_contains(office, utc(2025, 6, 1, 8, 0))  # Sunday
    month_end = parse_time_intervals([{"days_of_month": ["-2:-1"], "months": ["february"]}])
    assert any_contains(month_end, utc(2024, 2, 28))  # leap year: 28, 29
    assert not any_contains(month_end, utc(2024, 2, 27))
    assert any_contains(month_end, utc(2025, 2, 27))
    assert not any_contains(month_end, utc(2025, 3, 31))


def test_empty_list_matches_nothing_but_null_matches_everything() -> None:
    assert not parse_time_interval({"weekdays": []}).contains(utc(2025, 6, 2))
    assert parse_time_interval({"weekdays": None}).contains(utc(2025, 6, 2))
