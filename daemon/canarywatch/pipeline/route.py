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
the config package only validates the route tree as written. The root defaults differ from
Alertmanager's: ``group_by`` is ``(cluster, namespace, canary)`` (one group per canary),
``group_wait`` and ``group_interval`` are 0 s, because a lifecycle transition is discrete news
and batching only delays it (a positive value batches); ``repeat_interval`` is 4 h as in
Alertmanager.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from canarywatch.labels.matchers import Matcher, matches_all
from canarywatch.labels.timeintervals import TimeInterval, any_contains
from canarywatch.model import CanaryEvent, NotificationStatus, Routed, RouteOptions

__all__ = [
    "DEFAULT_GROUP_BY",
    "DEFAULT_GROUP_INTERVAL_S",
    "DEFAULT_GROUP_WAIT_S",
    "DEFAULT_REPEAT_INTERVAL_S",
    "GROUP_BY_ALL",
    "Route",
    "RouteResult",
    "RouteSpec",
    "Router",
    "build_route",
    "group_labels",
]

DEFAULT_GROUP_BY: tuple[str, ...] = ("cluster", "namespace", "canary")
DEFAULT_GROUP_WAIT_S = 0.0
DEFAULT_GROUP_INTERVAL_S = 0.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0
GROUP_BY_ALL = "..."
"""In ``RouteSpec.group_by``, the single entry ``"..."`` means "group by every label"."""

_EMPTY_BOOLS: Mapping[str, bool] = MappingProxyType({})
_EMPTY_INTERVALS: Mapping[str, Sequence[TimeInterval]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route as configured: ``None`` means "inherit from the parent" (or the default)."""

    receiver: str | None = None
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    group_by: tuple[str, ...] | None = None
    """Label names, or ``("...",)`` for all labels; ``None`` inherits, and so does ``()`` below
    the root (on the root ``()`` is one group for everything)."""
    group_wait_s: float | None = None
    group_interval_s: float | None = None
    repeat_interval_s: float | None = None
    routes: tuple[RouteSpec, ...] = ()
    mute_time_intervals: tuple[str, ...] = ()
    active_time_intervals: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved node: every inheritable setting filled in."""

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


def _resolve_group_by(spec_group_by: tuple[str, ...], where: str) -> tuple[str, ...] | None:
    if GROUP_BY_ALL in spec_group_by:
        if len(spec_group_by) != 1:
            raise ValueError(f"{where}: cannot have wildcard group_by ('...') and other labels")
        return None
    seen: set[str] = set()
    for name in spec_group_by:
        if not name:
            raise ValueError(f"{where}: group_by has an empty label name")
        if name in seen:
            raise ValueError(f"{where}: duplicated label {name!r} in group_by")
        seen.add(name)
    return spec_group_by


def _check_duration(name: str, value: float, where: str, *, allow_zero: bool) -> float:
    if value < 0 or (value == 0 and not allow_zero) or value != value:  # NaN != NaN
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{where}: {name} must be {bound}, got {value}")
    return float(value)


def build_route(spec: RouteSpec, parent: Route | None = None, *, _where: str = "route") -> Route:
    """Resolve ``spec`` (and its children) against ``parent``: inheritance and root defaults.

    ``ValueError`` names the node by its key path (``route.routes[1]: ...``).
    """
    where = _where
    if parent is None:
        if not spec.receiver:
            raise ValueError(f"{where}: the root route must name a receiver")
        if spec.matchers:
            raise ValueError(f"{where}: the root route must not have matchers")
        if spec.continue_:
            raise ValueError(f"{where}: the root route cannot have continue set")
        if spec.mute_time_intervals or spec.active_time_intervals:
            raise ValueError(f"{where}: the root route cannot have mute or active time intervals")
    receiver = spec.receiver or (parent.receiver if parent else "")
    if parent is None:
        group_by = (
            DEFAULT_GROUP_BY if spec.group_by is None else _resolve_group_by(spec.group_by, where)
        )
    elif spec.group_by:
        group_by = _resolve_group_by(spec.group_by, where)
    else:
        # Alertmanager reads an empty group_by as unset (config.Route keeps GroupBy nil), so a
        # child's ``group_by: []`` inherits instead of putting everything in one group.
        group_by = parent.group_by

    def pick(own: float | None, inherited: float, default: float, name: str, zero: bool) -> float:
        value = own if own is not None else (inherited if parent is not None else default)
        return _check_duration(name, value, where, allow_zero=zero)

    node = Route(
        receiver=receiver,
        matchers=tuple(spec.matchers),
        continue_=spec.continue_,
        group_by=group_by,
        group_wait_s=pick(
            spec.group_wait_s,
            parent.group_wait_s if parent else 0.0,
            DEFAULT_GROUP_WAIT_S,
            "group_wait",
            True,
        ),
        group_interval_s=pick(
            spec.group_interval_s,
            parent.group_interval_s if parent else 0.0,
            DEFAULT_GROUP_INTERVAL_S,
            "group_interval",
            True,
        ),
        repeat_interval_s=pick(
            spec.repeat_interval_s,
            parent.repeat_interval_s if parent else 0.0,
            DEFAULT_REPEAT_INTERVAL_S,
            "repeat_interval",
            False,
        ),
        routes=(),
        mute_time_intervals=tuple(spec.mute_time_intervals),
        active_time_intervals=tuple(spec.active_time_intervals),
    )
    children = tuple(
        build_route(child, node, _where=f"{where}.routes[{index}]")
        for index, child in enumerate(spec.routes)
    )
    return dataclasses.replace(node, routes=children)


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
