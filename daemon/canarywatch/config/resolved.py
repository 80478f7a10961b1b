"""The loaded configuration as the rest of canarywatch sees it.

``Config`` is what ``load_config`` returns: sections from ``config.models`` plus the route tree
with every inherited option filled in (``Route``), and a ``SourceMap`` so later checks (the
sink loader, ``check-config``) can raise ``ConfigError`` pointing at the right line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from canarywatch.config.models import (
    ALL_LABELS,
    InhibitRule,
    LogSettings,
    Receiver,
    ServerSettings,
    Silence,
    StateSettings,
)
from canarywatch.config.timeintervals import TimeIntervalSet
from canarywatch.errors import ConfigError
from canarywatch.model import RouteOptions

Loc = tuple[str | int, ...]
"""A key path as a tuple: ``("receivers", 1, "options", "url")``."""


def format_path(loc: Loc) -> str:
    """``("receivers", 1, "options", "url")`` -> ``receivers[1].options.url``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True, slots=True)
class SourceMap:
    """Where each key of the YAML document was written."""

    file: str | None = None
    lines: Mapping[Loc, int] = field(default_factory=lambda: MappingProxyType({}))

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest written ancestor (for missing keys)."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def error(self, loc: Loc, message: str) -> ConfigError:
        return ConfigError(message, path=format_path(loc), line=self.line_of(loc), file=self.file)


@dataclass(frozen=True, slots=True)
class Route:
    """A route node with inheritance applied: every option has its effective value."""

    receiver: str
    group_by: tuple[str, ...] | None
    """Labels to group by; ``None`` means ``["..."]``: every label."""
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    matchers: tuple[str, ...] = ()
    continue_: bool = False
    mute_time_intervals: tuple[str, ...] = ()
    active_time_intervals: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    path: str = "route"
    """Where the node is in the config (``route.routes[0]``): for logs and errors."""

    def options(self, *, send_resolved: bool = False) -> RouteOptions:
        """The grouping settings ``pipeline.group`` uses for events routed here."""
        return RouteOptions(
            group_by=self.group_by,
            group_wait_s=self.group_wait_s,
            group_interval_s=self.group_interval_s,
            repeat_interval_s=self.repeat_interval_s,
            send_resolved=send_resolved,
        )

    def walk(self) -> tuple[Route, ...]:
        """This node and all descendants, depth first in config order."""
        return (self, *(node for child in self.routes for node in child.walk()))


def group_by_option(group_by: tuple[str, ...]) -> tuple[str, ...] | None:
    return None if group_by == (ALL_LABELS,) else group_by


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The validated, resolved configuration."""

    cluster: str = "default"
    receivers: tuple[Receiver, ...]
    route: Route
    time_intervals: tuple[TimeIntervalSet, ...] = ()
    inhibit_rules: tuple[InhibitRule, ...] = ()
    silences: tuple[Silence, ...] = ()
    state: StateSettings = field(default_factory=StateSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    catch_up_window_s: float = 600.0
    log: LogSettings = field(default_factory=LogSettings)
    source: SourceMap = field(default_factory=SourceMap, repr=False, compare=False)

    def receiver(self, name: str) -> Receiver:
        """The receiver called ``name``; ``KeyError`` if there is none."""
        for receiver in self.receivers:
            if receiver.name == name:
                return receiver
        raise KeyError(f"no receiver named {name!r}")

    def time_interval(self, name: str) -> TimeIntervalSet:
        """The time interval set called ``name``; ``KeyError`` if there is none."""
        for interval in self.time_intervals:
            if interval.name == name:
                return interval
        raise KeyError(f"no time interval named {name!r}")

    def error_at(self, loc: Loc, message: str) -> ConfigError:
        """A ``ConfigError`` at ``loc`` with file and line filled in, for later checks.

        For example the sink loader: ``config.error_at(("receivers", 1, "sink"), "unknown sink
        'slak' (known: console, jsonl)")``.
        """
        return self.source.error(loc, message)
