"""Flagger's series as Prometheus answers them, rendered back into exposition text.

Why render back to text: Flagger's series reach canarywatch either straight from its
``/metrics`` (mode ``scrape``) or through a Prometheus that scrapes it (mode ``prometheus``).
Turning the query result into the same text format a scrape returns lets one normaliser
(:mod:`canarywatch.normalise.flagger_metrics`) decode both, so the two modes cannot drift apart,
recordings look the same whichever mode made them, and "did anything change" is one string
comparison. The rendering is deterministic (series sorted, no timestamps) for that reason.

What Prometheus adds is taken back out: the ``job``/``instance`` target labels are dropped, and
an ``exported_<label>`` (Prometheus' rename of a scraped label that collides with a target
label, e.g. Flagger's ``namespace`` under a ServiceMonitor) becomes ``<label>`` again.

The query itself goes through the one Prometheus client, :mod:`canarywatch.sources.prometheus`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

from canarywatch.sources.prometheus import FailureKind, FetchError, PromSample

DROPPED_LABELS: Final = frozenset({"job", "instance"})
EXPORTED_PREFIX: Final = "exported_"
FLAGGER_SELECTOR: Final = '__name__=~"flagger_.+"'


def flagger_query(match: str = "") -> str:
    """The instant query for every ``flagger_*`` series, narrowed by extra matchers.

    ``match`` is PromQL label matchers without braces (``job="flagger",cluster="prod"``), for a
    Prometheus that scrapes more than one Flagger.
    """
    extra = match.strip().strip(",")
    return "{" + FLAGGER_SELECTOR + (f",{extra}" if extra else "") + "}"


def restore_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Undo what a Prometheus scrape adds: drop ``job``/``instance``, rename ``exported_*``."""
    restored = {k: v for k, v in labels.items() if k not in DROPPED_LABELS}
    for key in [k for k in restored if k.startswith(EXPORTED_PREFIX)]:
        original = key.removeprefix(EXPORTED_PREFIX)
        if original:
            restored[original] = restored.pop(key)
    return restored


def render_exposition(samples: Sequence[PromSample]) -> str:
    """Text exposition format (0.0.4) of ``samples``: sorted, no timestamps, no HELP/TYPE.

    Series that become identical once the target labels are dropped (the same Flagger scraped by
    two jobs) are written once, the first in sort order. A sample without a metric name has no
    line in the text format: the answer is ``bad_response``.
    """
    lines: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    for sample in samples:
        if not sample.name:
            raise FetchError(FailureKind.BAD_RESPONSE)
        labels = tuple(sorted(restore_labels(sample.labels).items()))
        key = (sample.name, labels)
        line = sample.name + _render_labels(labels) + " " + _render_value(sample.value)
        if key not in lines or line < lines[key]:
            lines[key] = line
    return "".join(lines[key] + "\n" for key in sorted(lines))


def _render_labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render_value(raw: str) -> str:
    value = float(raw)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return raw
