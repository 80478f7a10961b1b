"""The loaded configuration as the rest of canarywatch sees it.

``Config`` is what ``load_config`` returns: the sections' models (one module per concern:
``config.routing``, ``config.receivers``, ...), the route tree as written (``RouteSpec``:
validated, but inheritance and the root defaults are applied by
``pipeline.route.build_route``), the named time intervals parsed by
``canarywatch.labels.timeintervals``, and a ``SourceMap`` so later checks (the sink loader,
``check-config``, building the route tree) can raise ``ConfigError`` pointing at the right line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeAlias

from canarywatch.config.clusters import ClusterSettings, LeaderElectionSettings
from canarywatch.config.daemon import LogSettings, ServerSettings, StateSettings
from canarywatch.config.delivery import DispatchSettings
from canarywatch.config.muting import InhibitRule, Silence
from canarywatch.config.receivers import Receiver
from canarywatch.config.routing import LabelSettings, RouteSpec
from canarywatch.config.sources import (
    LowTrafficSettings,
    MetricsSourceSettings,
    WebhookIntakeSettings,
)
from canarywatch.errors import ConfigError
from canarywatch.labels.keypath import KeyPath, format_key_path
from canarywatch.labels.timeintervals import TimeInterval

Loc: TypeAlias = KeyPath
"""A key path as a tuple: ``("receivers", 1, "options", "url")`` (``labels.keypath``)."""


def original_loc(loc: Loc, renumbered: Mapping[Loc, tuple[int, ...]]) -> Loc:
    """``loc`` in a document with list items left out -> the same place as written.

    ``renumbered`` maps a shortened list's path (as written) to the indices it kept.
    """
    out: Loc = ()
    for part in loc:
        kept = renumbered.get(out)
        if isinstance(part, int) and kept is not None and 0 <= part < len(kept):
            part = kept[part]
        out = (*out, part)
    return out


@dataclass(frozen=True, slots=True)
class SourceMap:
    """Where each key of the YAML document was written."""

    file: str | None = None
    lines: Mapping[Loc, int] = field(default_factory=lambda: MappingProxyType({}))
    renumbered: Mapping[Loc, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """When the loader validated the document without items that failed (to report every
    problem at once): per shortened list, the indices kept. Errors name the place as written."""

    def original(self, loc: Loc) -> Loc:
        """``loc`` in the validated document -> the same place in the file."""
        return original_loc(loc, self.renumbered) if self.renumbered else loc

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest written ancestor (for missing keys)."""
        loc = self.original(loc)
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def error(self, loc: Loc, message: str) -> ConfigError:
        return ConfigError(
            message,
            path=format_key_path(self.original(loc)),
            line=self.line_of(loc),
            file=self.file,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The validated configuration."""

    cluster: str = "default"
    receivers: tuple[Receiver, ...]
    route: RouteSpec
    """The route tree as written, at ``routing.ROUTE_LOC``; ``routing.walk_route`` gives each
    node's key path."""
    time_intervals: Mapping[str, tuple[TimeInterval, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Named time intervals, parsed; a name covers a moment when any of its intervals does."""
    inhibit_rules: tuple[InhibitRule, ...] | None = None
    """``None``: not configured, the shipped defaults apply (``policy.DEFAULT_INHIBIT_RULES``)."""
    silences: tuple[Silence, ...] = ()
    state: StateSettings = field(default_factory=StateSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    catch_up_window_s: float = 600.0
    log: LogSettings = field(default_factory=LogSettings)
    clusters: tuple[ClusterSettings, ...] = ()
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    metrics_source: MetricsSourceSettings = field(default_factory=MetricsSourceSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    webhook_intake: WebhookIntakeSettings = field(default_factory=WebhookIntakeSettings)
    low_traffic: LowTrafficSettings = field(default_factory=LowTrafficSettings)
    source: SourceMap = field(default_factory=SourceMap, repr=False, compare=False)

    def receiver(self, name: str) -> Receiver:
        """The receiver called ``name``; ``KeyError`` if there is none."""
        for receiver in self.receivers:
            if receiver.name == name:
                return receiver
        raise KeyError(f"no receiver named {name!r}")

    def error_at(self, loc: Loc, message: str) -> ConfigError:
        """A ``ConfigError`` at ``loc`` with file and line filled in, for later checks.

        For example the sink loader: ``config.error_at(("receivers", 1, "sink"), "unknown sink
        'slak' (known: console, jsonl)")``.
        """
        return self.source.error(loc, message)
