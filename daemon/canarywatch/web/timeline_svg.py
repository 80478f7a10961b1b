"""A rollout's weight over time as an inline SVG step chart, rendered on the server.

The x axis is the time the daemon saw each step (from the rollout's first step to its last), the
y axis the canary weight (0 % at the bottom, the scale's top at least 50 %). Halts, gates and the
verdict are marked with a symbol and a ``<title>`` (a tooltip, read by screen readers); the
``<desc>`` says the whole story in words, so the chart never means anything by colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from canarywatch.views.timeline import Rollout, StepKind
from canarywatch.web.html import esc

__all__ = ["HEIGHT", "TOP", "WIDTH", "step_chart", "step_path", "verdict_text", "y_of"]

WIDTH: Final = 640
HEIGHT: Final = 170
LEFT: Final = 44
RIGHT: Final = 16
TOP: Final = 14
BOTTOM: Final = 26
_MARKS: Final = {
    StepKind.HALT: ("▲", "halt"),
    StepKind.GATE: ("◆", "gate"),
    StepKind.VERDICT: ("●", "verdict"),
}


def verdict_text(rollout: Rollout) -> str:
    """The verdict in words and a symbol: ``promoted ✓``, ``rolled back ✗``, ``in progress …``."""
    verdict = rollout.verdict
    if verdict is None:
        return "in progress …"
    words = verdict.transition.value.replace("-", " ")
    return f"{words} {'✓' if rollout.succeeded else '✗'}"


def _scale_top(rollout: Rollout) -> int:
    return max(50, -(-rollout.max_weight // 10) * 10)


def y_of(weight: int, top: int) -> float:
    """The y coordinate of ``weight`` on a scale from 0 to ``top``."""
    return round(TOP + (HEIGHT - TOP - BOTTOM) * (1 - weight / top), 1)


def step_path(points: Sequence[tuple[float, int]], top: int, x_end: float) -> str:
    """The path ``d`` of a step chart through ``(x, weight)`` points: a horizontal run at each
    weight until the next point, a vertical step there; the last weight runs to ``x_end``."""
    if not points:
        return ""
    x0, w0 = points[0]
    d = [f"M{x0:.1f},{y_of(w0, top)}"]
    for x, w in points[1:]:
        d.append(f"H{x:.1f}")
        d.append(f"V{y_of(w, top)}")
    d.append(f"H{x_end:.1f}")
    return " ".join(d)


def step_chart(rollout: Rollout, chart_id: str) -> str:
    start = rollout.started_at
    span = max((rollout.ended_at - start).total_seconds(), 1.0)
    plot_w = WIDTH - LEFT - RIGHT

    def x_of(seconds: float) -> float:
        return LEFT + plot_w * seconds / span

    top = _scale_top(rollout)
    points = [
        (x_of((s.at - start).total_seconds()), s.weight)
        for s in rollout.steps
        if s.weight is not None
    ]
    path = step_path(points, top, WIDTH - RIGHT)
    grid = []
    for w in (0, top // 2, top):
        y = y_of(w, top)
        grid.append(
            f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{w}%</text>'
        )
    marks = []
    for step in rollout.steps:
        mark = _MARKS.get(step.kind)
        if mark is None:
            continue
        symbol, css = mark
        x = x_of((step.at - start).total_seconds())
        y = y_of(step.weight or 0, top) - 6
        label = f"{step.transition.value} {step.trail.event.detail}".strip()
        if step.kind is StepKind.VERDICT:
            css += " ok" if rollout.succeeded else " bad"
        marks.append(
            f'<text class="mark {css}" x="{x:.1f}" y="{y:.1f}" text-anchor="middle">'
            f"<title>{esc(label)} at {esc(step.at.strftime('%H:%M:%S'))}</title>{symbol}</text>"
        )
    seconds = int(span)
    grid.append(
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 8}">{esc(start.strftime("%H:%M:%S"))}</text>'
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
        f"+{seconds}s</text>"
    )
    weights = " → ".join(f"{w}%" for _, w in points) or "unknown"
    halts = sum(1 for s in rollout.steps if s.kind is StepKind.HALT)
    gates = sum(1 for s in rollout.steps if s.kind is StepKind.GATE)
    desc = (
        f"Canary weight {weights}; {halts} halt(s), {gates} gate step(s); "
        f"verdict: {verdict_text(rollout)}"
    )
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-labelledby="{chart_id}-t {chart_id}-d" '
        f'data-weights="{" ".join(str(w) for _, w in points)}">'
        f'<title id="{chart_id}-t">Rollout {rollout.number}: canary weight over time</title>'
        f'<desc id="{chart_id}-d">{esc(desc)}</desc>'
        f"{''.join(grid)}"
        f'<path class="weight" d="{path}"/>'
        f"{''.join(marks)}</svg>"
    )
