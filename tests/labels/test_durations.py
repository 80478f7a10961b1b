"""Prometheus-style durations: parse, format, and the round trip between them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarywatch.labels.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1y", 365 * 86400.0),
        ("250ms", 0.25),
        ("1m500ms", 60.5),
        ("2h0m5s", 7205.0),
    ],
)
def test_parses_prometheus_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "5", "1.5h", "30m1h", "5 m", " 5m", "-5m", "5M", "1h1h", "ms", "10x"]
)
def test_rejects_bad_syntax_with_the_input_and_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)
    assert "1h30m" in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (30, "30s"),
        (300, "5m"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
        (604800, "1w"),
        (0.25, "250ms"),
        (432000, "5d"),
    ],
)
def test_formats_shortest_spelling(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_format_refuses_impossible_values(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=10 * 365 * 86400 * 1000))
def test_format_then_parse_is_identity_on_milliseconds(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == millis / 1000
