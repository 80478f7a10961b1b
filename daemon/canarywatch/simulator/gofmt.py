"""Numbers as Go prints them, for the messages the simulated Flagger writes.

Flagger builds its Event and condition messages with ``fmt.Sprintf``: ``%v`` of a ``float64``
(``99``, ``99.5``) and ``time.Duration.String()`` (``500ms``, ``1m30s``). The simulator must
write them byte for byte as the real controller does: canarywatch's normalisers parse those
messages, and the fixtures under ``tests/fixtures/flagger`` follow Flagger's source.
"""

from __future__ import annotations


def go_float(value: float) -> str:
    """``fmt.Sprintf("%v", float64)`` for the values Flagger prints: ``99``, ``99.5``."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def go_duration(seconds: float) -> str:
    """``time.Duration.String()``: ``500ms``, ``1.283s``, ``1m30s``, ``0s``."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        if not rest:
            return str(whole)
        digits = f"{rest:0{len(str(unit)) - 1}d}".rstrip("0")
        return f"{whole}.{digits}"

    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return f"{sign}{frac(nanos, 1_000)}µs"
    if nanos < 1_000_000_000:
        return f"{sign}{frac(nanos, 1_000_000)}ms"
    hours, rest = divmod(nanos, 3_600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = f"{frac(rest, 10**9)}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text
