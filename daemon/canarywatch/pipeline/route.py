"""The route tree: which receivers an event goes to, with which grouping settings.

Alertmanager's routing, applied to ``CanaryEvent.labels``:

- Matching is depth-first and left to right. The root matches every event. Within a node, the
  first child whose subtree matches takes the event and the search stops there, unless that
  child has ``continue`` set, in which case later siblings are tried as well. A node none of
  whose children match handles the event itself.
- Settings inherit down the tree: a child that leaves ``receiver``, ``group_by``, ``group_wait``,
  ``group_interval`` or ``repeat_interval`` unset takes its parent's; ``group_by: []`` counts as
  unset, as in Alertmanager. On the root, ``group_by: []`` means one group for everything
  (Alertmanager's default, which canarywatch's own root default is not). As in Alertmanager,
  ``mute_time_intervals`` and ``active_time_intervals`` do **not** inherit: they apply to the
  node that names them.
- A matched node is muted while any of its ``mute_time_intervals`` contains ``now``, or while it
  names ``active_time_intervals`` and none contains ``now``. A muted node still ends the search
  (it "acts normally" otherwise), it just produces no target.
- Targets that would land in the same aggregation group (same receiver, same group labels) are
  delivered once.

This module is the one place inheritance and the root defaults are applied (``build_route``);
``canarywatch.config.routing`` holds the route tree as written (``RouteSpec``), its validation
and the root defaults (one group per canary, sent at once, repeated every 4 h).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from canarywatch.config.routing import (
    ALL_LABELS,
    DEFAULT_GROUP_BY,
    DEFAULT_GROUP_INTERVAL_S,
    DEFAULT_GROUP_WAIT_S,
    DEFAULT_REPEAT_INTERVAL_S,
    ROUTE_LOC,
    RouteSpec,
    root_route_problems,
)
from canarywatch.labels.keypath import format_key_path
from canarywatch.labels.matchers import Matcher, matches_all, parse_matchers
from canarywatch.labels.timeintervals import TimeInterval, any_contains
from canarywatch.model import CanaryEvent, NotificationStatus, Routed, RouteOptions

__all__ = [
    "Route",
    "RouteResult",
    "Router",
    "build_route",
    "group_labels",
]

_EMPTY_BOOLS: Mapping[str, bool] = MappingProxyType({})
_EMPTY_INTERVALS: Mapping[str, Sequence[TimeInterval]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved node: every inheritable setting filled in (``build_route``)."""

    receiver: str
    matchers: tuple[Matcher, ...]
    continue_: bool
    group_by: tuple[str, ...] | None
    """``None`` means ``...``: every label of the event is a group label."""
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    routes: tuple[Route, ...]
    mute_time_intervals: tuple[str, ...]
    active_time_intervals: tuple[str, ...]

    def walk(self) -> Iterator[Route]:
        """This node and all below it, depth-first, left to right."""
        yield self
        for child in self.routes:
            yield from child.walk()

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The nodes that handle ``labels`` (Alertmanager's ``Route.Match``)."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.continue_:
                break
        return found or [self]

    def options(self, *, send_resolved: bool = False) -> RouteOptions:
        return RouteOptions(
            group_by=self.group_by,
            group_wait_s=self.group_wait_s,
            group_interval_s=self.group_interval_s,
            repeat_interval_s=self.repeat_interval_s,
            send_resolved=send_resolved,
        )


def build_route(spec: RouteSpec) -> Route:
    """Resolve the route tree as written: inheritance and the root defaults.

    ``spec`` was validated node by node when it was built (``RouteSpec`` is a pydantic model);
    what the root may not have (``config.routing.root_route_problems``, which the loader also
    reports) raises ``ValueError`` naming the key (``route.receiver: ...``).
    """
    for below, message in root_route_problems(spec):
        raise ValueError(f"{format_key_path((*ROUTE_LOC, *below))}: {message}")
    assert spec.receiver is not None  # noqa: S101 - a root route problem otherwise
    root = Route(
        receiver=spec.receiver,
        matchers=(),
        continue_=False,
        group_by=DEFAULT_GROUP_BY if spec.group_by is None else _group_by(spec.group_by),
        group_wait_s=_own(spec.group_wait, DEFAULT_GROUP_WAIT_S),
        group_interval_s=_own(spec.group_interval, DEFAULT_GROUP_INTERVAL_S),
        repeat_interval_s=_own(spec.repeat_interval, DEFAULT_REPEAT_INTERVAL_S),
        routes=(),
        mute_time_intervals=(),
        active_time_intervals=(),
    )
    return dataclasses.replace(root, routes=_children(spec, root))


def _children(spec: RouteSpec, parent: Route) -> tuple[Route, ...]:
    return tuple(_child(child, parent) for child in spec.routes)


def _child(spec: RouteSpec, parent: Route) -> Route:
    """A node below the root: what it leaves unset, it takes from ``parent``."""
    node = Route(
        receiver=spec.receiver or parent.receiver,
        matchers=tuple(parse_matchers(list(spec.matchers))),
        continue_=spec.continue_,
        # Alertmanager reads an empty group_by as unset (config.Route keeps GroupBy nil), so a
        # child's ``group_by: []`` inherits instead of putting everything in one group.
        group_by=_group_by(spec.group_by) if spec.group_by else parent.group_by,
        group_wait_s=_own(spec.group_wait, parent.group_wait_s),
        group_interval_s=_own(spec.group_interval, parent.group_interval_s),
        repeat_interval_s=_own(spec.repeat_interval, parent.repeat_interval_s),
        routes=(),
        mute_time_intervals=tuple(spec.mute_time_intervals),
        active_time_intervals=tuple(spec.active_time_intervals),
    )
    return dataclasses.replace(node, routes=_children(spec, node))


def _own(value: float | None, inherited: float) -> float:
    return inherited if value is None else value


def _group_by(written: tuple[str, ...]) -> tuple[str, ...] | None:
    """``("...",)`` (already checked to stand alone) is every label: ``None``."""
    return None if ALL_LABELS in written else written


def group_labels(
    event_labels: Mapping[str, str], group_by: tuple[str, ...] | None
) -> dict[str, str]:
    """The labels that name an event's group, sorted by name.

    ``None`` (``...``) takes every label. As in Alertmanager, a ``group_by`` label the event does
    not carry is left out rather than set to ``""``; an empty value counts as absent.
    """
    return {
        name: event_labels[name]
        for name in sorted(event_labels)
        if event_labels[name] != "" and (group_by is None or name in group_by)
    }


@dataclass(frozen=True, slots=True)
class RouteResult:
    """What routing one event produced: the targets to group, and those a time interval muted."""

    routed: tuple[Routed, ...]
    muted: tuple[Routed, ...] = ()
    resolved_unwanted: tuple[Routed, ...] = ()
    """Resolved targets whose receiver does not ``send_resolved``: dropped, not muted."""


class Router:
    """Routes events through one route tree; pure apart from the ``muted_count`` tally."""

    def __init__(
        self,
        root: Route,
        *,
        send_resolved: Mapping[str, bool] = _EMPTY_BOOLS,
        time_intervals: Mapping[str, Sequence[TimeInterval]] = _EMPTY_INTERVALS,
    ) -> None:
        for node in root.walk():
            for name in (*node.mute_time_intervals, *node.active_time_intervals):
                if name not in time_intervals:
                    raise ValueError(
                        f"route to receiver {node.receiver!r} names undefined time interval "
                        f"{name!r}"
                    )
        self.root = root
        self._send_resolved = dict(send_resolved)
        self._time_intervals = {name: tuple(v) for name, v in time_intervals.items()}
        self.muted_count = 0
        """Targets muted by a time interval since this router was made."""

    def _muted(self, node: Route, now: datetime) -> bool:
        if any(any_contains(self._time_intervals[n], now) for n in node.mute_time_intervals):
            return True
        return bool(node.active_time_intervals) and not any(
            any_contains(self._time_intervals[n], now) for n in node.active_time_intervals
        )

    def muted_by(self, node: Route, now: datetime) -> tuple[str, ...]:
        """Why ``node`` is muted at ``now``, in words (decision trails); empty: it is not."""
        why = [
            f"in mute_time_intervals {name}"
            for name in node.mute_time_intervals
            if any_contains(self._time_intervals[name], now)
        ]
        if node.active_time_intervals and not any(
            any_contains(self._time_intervals[n], now) for n in node.active_time_intervals
        ):
            why.append(f"outside active_time_intervals {', '.join(node.active_time_intervals)}")
        return tuple(why)

    def resolve(
        self,
        event: CanaryEvent,
        now: datetime,
        status: NotificationStatus = NotificationStatus.FIRING,
    ) -> RouteResult:
        """Route one event; see the module docstring for the rules."""
        routed: list[Routed] = []
        muted: list[Routed] = []
        unwanted: list[Routed] = []
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        muted_seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        candidates: list[tuple[Route, bool]] = [
            (node, self._muted(node, now)) for node in self.root.match(event.labels)
        ]
        # Unmuted targets first, so a group reached by an unmuted path is not counted as muted.
        for node, is_muted in sorted(candidates, key=lambda c: c[1]):
            target = (node.receiver, tuple(group_labels(event.labels, node.group_by).items()))
            wants_resolved = self._send_resolved.get(node.receiver, False)
            item = Routed(
                event=event,
                receiver=node.receiver,
                route=node.options(send_resolved=wants_resolved),
                status=status,
            )
            if is_muted:
                if target not in seen and target not in muted_seen:
                    muted_seen.add(target)
                    muted.append(item)
                continue
            if target in seen:
                continue
            seen.add(target)
            if status is NotificationStatus.RESOLVED and not wants_resolved:
                unwanted.append(item)
            else:
                routed.append(item)
        return RouteResult(tuple(routed), tuple(muted), tuple(unwanted))

    def route(
        self,
        event: CanaryEvent,
        now: datetime,
        status: NotificationStatus = NotificationStatus.FIRING,
    ) -> list[Routed]:
        """The targets of ``event`` in tree order; muted ones add to ``muted_count``."""
        result = self.resolve(event, now, status)
        self.muted_count += len(result.muted)
        return list(result.routed)
