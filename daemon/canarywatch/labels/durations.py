"""Durations in Prometheus/Alertmanager syntax: ``0s``, ``30s``, ``1h30m``, ``1d``, ``250ms``.

The syntax is the one users already write in Alertmanager configs: whole numbers, units from
largest to smallest, each at most once (``y`` = 365d, ``w``, ``d``, ``h``, ``m``, ``s``,
``ms``), and a bare ``0``. Values are plain float seconds inside canarywatch.
"""

from __future__ import annotations

import math
import re
from typing import Final

_UNITS: Final = (
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
)
_PATTERN: Final = re.compile("".join(rf"(?:(?P<{u}>[0-9]+){u})?" for u, _ in _UNITS))
_EXPECTED: Final = (
    "expected whole numbers with units largest first, e.g. 30s, 5m, 1h30m, 1d, 1w, 250ms "
    "(units: y, w, d, h, m, s, ms)"
)


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ``ValueError`` naming the bad input and the accepted syntax."""
    if not isinstance(text, str):
        raise TypeError(f"duration must be a string, not {type(text).__name__}")
    if text == "0":
        return 0.0
    match = _PATTERN.fullmatch(text)
    if text == "" or match is None:
        raise ValueError(f"invalid duration {text!r}: {_EXPECTED}")
    millis = sum(int(match[u]) * factor for u, factor in _UNITS if match[u] is not None)
    return millis / 1000


def format_duration(seconds: float) -> str:
    """The shortest Prometheus spelling of ``seconds`` (rounded to whole milliseconds)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration of {seconds!r} seconds")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, factor in _UNITS:
        count, millis = divmod(millis, factor)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
