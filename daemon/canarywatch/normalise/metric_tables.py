"""How to read Flagger's ``/metrics`` for a given Flagger version.

Facts from ``reference/flagger.md`` §1, read from Flagger's ``pkg/metrics/recorder.go`` history:

- ``flagger_canary_status`` has meant 0 = Progressing, 1 = *any other phase*, 2 = Failed since
  0.1.0-beta.6 and has never changed. 1 is ambiguous (Initialized, Waiting, Promoting, Succeeded,
  ...): it is never read as "succeeded". No other value has ever existed, so any other value is
  reported as unknown rather than guessed.
- ``flagger_canary_metric_analysis`` exists from v1.20.0 with the label ``metric``; for the week
  before that release (commit 13483321) development builds used ``metricTemplate``. Both are
  accepted, ``metric`` first.
- ``flagger_canary_successes_total`` / ``flagger_canary_failures_total`` exist from v1.42.0.
- The proposed ``flagger_canary_phase{name,namespace,phase}`` state set (Flagger PR #1927, not in
  v1.44.0) names the phase exactly; when a scrape carries it, it is authoritative.

The tables describe what a version *exposes*; the decoder still reads whatever series a scrape
actually has, so an odd build with an extra series is not punished.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from canarywatch.model import Phase

STATUS_METRIC = "flagger_canary_status"
WEIGHT_METRIC = "flagger_canary_weight"
ANALYSIS_METRIC = "flagger_canary_metric_analysis"
SUCCESSES_METRIC = "flagger_canary_successes_total"
FAILURES_METRIC = "flagger_canary_failures_total"
INFO_METRIC = "flagger_info"
PHASE_METRIC = "flagger_canary_phase"
"""Proposed in Flagger PR #1927: a state set, value 1 on the series of the current phase."""


class StatusMeaning(enum.StrEnum):
    """What one ``flagger_canary_status`` value says about the phase."""

    PROGRESSING = "progressing"
    OTHER = "other"
    """Any phase but Progressing and Failed: ambiguous, never read as succeeded."""
    FAILED = "failed"


_STATUS_SINCE_BETA6: Mapping[int, StatusMeaning] = MappingProxyType(
    {0: StatusMeaning.PROGRESSING, 1: StatusMeaning.OTHER, 2: StatusMeaning.FAILED}
)

Version = tuple[int, int, int, tuple[int | str, ...]]
"""A parsed semver: major, minor, patch and the pre-release identifiers (empty for a release)."""


@dataclass(frozen=True, slots=True)
class DecodingTable:
    """How to decode one Flagger version range's metrics."""

    name: str
    since: str
    """The first Flagger version this table applies to."""
    status_values: Mapping[int, StatusMeaning]
    analysis_labels: tuple[str, ...]
    """Label names that carry the metric name of ``flagger_canary_metric_analysis``, in order."""
    has_analysis: bool
    has_outcome_counters: bool

    def status_meaning(self, value: float) -> StatusMeaning | None:
        """The meaning of a status gauge value, or ``None`` when the table has no such value."""
        if not value.is_integer():
            return None
        return self.status_values.get(int(value))


def status_for_phase(phase: Phase) -> StatusMeaning:
    """``Recorder.SetStatus``: the status gauge value a phase is written as."""
    if phase is Phase.PROGRESSING:
        return StatusMeaning.PROGRESSING
    if phase is Phase.FAILED:
        return StatusMeaning.FAILED
    return StatusMeaning.OTHER


_BOTH_ANALYSIS_LABELS = ("metric", "metricTemplate")

TABLES: tuple[DecodingTable, ...] = (
    DecodingTable(
        name="status-only",
        since="0.1.0-beta.6",
        status_values=_STATUS_SINCE_BETA6,
        # Development builds of the week before v1.20.0 used ``metricTemplate``.
        analysis_labels=("metricTemplate", "metric"),
        has_analysis=False,
        has_outcome_counters=False,
    ),
    DecodingTable(
        name="metric-analysis",
        since="1.20.0",
        status_values=_STATUS_SINCE_BETA6,
        analysis_labels=_BOTH_ANALYSIS_LABELS,
        has_analysis=True,
        has_outcome_counters=False,
    ),
    DecodingTable(
        name="outcome-counters",
        since="1.42.0",
        status_values=_STATUS_SINCE_BETA6,
        analysis_labels=_BOTH_ANALYSIS_LABELS,
        has_analysis=True,
        has_outcome_counters=True,
    ),
)
"""Oldest first; each table applies from its ``since`` up to the next table's ``since``."""

NEWEST_TABLE = TABLES[-1]

VERIFIED_THROUGH = (1, 44)
"""The newest minor version the facts were read from; later versions decode with the newest
table but are reported as not known, so the operator is told once."""

_SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d{0,8})\.(?P<minor>0|[1-9]\d{0,8})\.(?P<patch>0|[1-9]\d{0,8})"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)


def parse_version(text: str) -> Version | None:
    """Parse ``1.44.0``, ``v1.44.0``, ``0.1.0-beta.6``; ``None`` for anything else."""
    if len(text) > 128:
        return None
    match = _SEMVER.match(text.strip())
    if match is None:
        return None
    pre_text = match.group("pre")
    pre: tuple[int | str, ...] = ()
    if pre_text:
        pre = tuple(int(part) if part.isdigit() else part for part in pre_text.split("."))
    return (int(match.group("major")), int(match.group("minor")), int(match.group("patch")), pre)


def version_key(version: Version) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
    """A sort key with semver precedence: a pre-release sorts before its release."""
    major, minor, patch, pre = version
    ids = tuple((0, part, "") if isinstance(part, int) else (1, 0, part) for part in pre)
    return (major, minor, patch, 0 if pre else 1, ids)


def table_for(version: str | None) -> tuple[DecodingTable, bool]:
    """The table for a ``flagger_info`` version, and whether that version is known.

    An absent, unparseable, older-than-0.1.0-beta.6 or newer-than-verified version decodes with
    the newest table and ``known=False``.
    """
    if version is None:
        return NEWEST_TABLE, False
    parsed = parse_version(version)
    if parsed is None:
        return NEWEST_TABLE, False
    key = version_key(parsed)
    if (parsed[0], parsed[1]) > VERIFIED_THROUGH:
        return NEWEST_TABLE, False
    chosen: DecodingTable | None = None
    for table in TABLES:
        since = parse_version(table.since)
        if since is not None and key >= version_key(since):
            chosen = table
    if chosen is None:
        return NEWEST_TABLE, False
    return chosen, True
