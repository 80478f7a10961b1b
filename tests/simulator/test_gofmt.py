"""Numbers in the simulated Flagger's messages, as Go's fmt prints them."""

from __future__ import annotations

from canarywatch.simulator.gofmt import go_duration, go_float


def test_go_duration_is_time_duration_string() -> None:
    assert [go_duration(s) for s in (1.283, 0.5, 0, 90, 3600.5, 0.000_002_5)] == [
        "1.283s", "500ms", "0s", "1m30s", "1h0m0.5s", "2.5µs",
    ]  # fmt: skip


def test_go_float_is_percent_v() -> None:
    assert [go_float(v) for v in (99, 99.5, 0.191)] == ["99", "99.5", "0.191"]
