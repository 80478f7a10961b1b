"""Inhibition: "a firing source event mutes matching target events with equal labels".

Alertmanager's semantics (``inhibit/inhibit.go``, ``Inhibitor.Mutes`` and ``hasEqual``): a target
is muted when some *firing* event matches the rule's source matchers, the target matches its
target matchers, and both carry the same value for every ``equal`` label (a missing label equals
the empty string). The sources are every firing event, whichever canary (or self-event's
pseudo-canary) it belongs to: ``equal`` alone decides how far a source reaches, so
``equal: [cluster]`` lets a ``metrics-source-down`` mute the ``no-traffic`` of every canary in
its cluster.

When the target matches the source matchers too, sources that also match the target matchers
are left out (Alertmanager's ``excludeTwoSidedMatch``): two events that both match both sides
never mute each other, and an event never mutes itself.

Only condition openers fire (``TransitionSpec.opens``); one-shot transitions never fire, so they
never inhibit (README, "Notification policy"). A rule whose source side can match nothing but
one-shots is logged once, as ``inhibit_rule_never_fires``, when the inhibitor is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from canarywatch.labels.matchers import Matcher, matches_all
from canarywatch.model import TRANSITIONS, CanaryEvent
from canarywatch.pipeline.firing_index import FiringIndex, equal_key

_DECIDED_BY_TRANSITION = frozenset({"transition", "severity"})
"""Labels fixed by the transition alone (``model.TRANSITIONS``)."""


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    def _equal(self, a: Mapping[str, str], b: Mapping[str, str]) -> bool:
        return equal_key(self.equal, a) == equal_key(self.equal, b)

    def source_can_fire(self) -> bool:
        """Whether some condition-opening transition can match the source side.

        Only the ``transition`` and ``severity`` matchers are decided here (every other label
        depends on the event); ``False`` means the rule can never inhibit anything.
        """
        decided = [m for m in self.source_matchers if m.name in _DECIDED_BY_TRANSITION]
        return any(
            matches_all(decided, {"transition": t.value, "severity": spec.severity.value})
            for t, spec in TRANSITIONS.items()
            if spec.opens is not None
        )

    def inhibited_by(
        self, target: CanaryEvent, firing: Iterable[CanaryEvent]
    ) -> CanaryEvent | None:
        """The first firing event through which this rule mutes ``target``, if any."""
        if not matches_all(self.target_matchers, target.labels):
            return None
        two_sided = matches_all(self.source_matchers, target.labels)
        # Cheapest test first: most firing events belong to other canaries and fail `equal` by a
        # few string comparisons, before any (RE2) source matcher runs. The tests are ANDed, so
        # their order does not change which source is found first.
        for source in firing:
            if source.spec.opens is None:
                continue
            if not self._equal(source.labels, target.labels):
                continue
            if not matches_all(self.source_matchers, source.labels):
                continue
            if two_sided and matches_all(self.target_matchers, source.labels):
                continue
            return source
        return None


class Inhibitor:
    def __init__(
        self,
        rules: Sequence[InhibitRule] = (),
        *,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._rules = tuple(rules)
        log = log or structlog.get_logger().bind(component="stage.inhibit")
        for index, rule in enumerate(self._rules):
            if not rule.source_can_fire():
                log.warning(
                    "inhibit_rule_never_fires",
                    rule=index,
                    source_matchers=[str(m) for m in rule.source_matchers],
                    detail="its source_matchers match only one-shot transitions, which never "
                    "fire, so it never inhibits; use a condition-opening transition",
                )

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def index(self) -> FiringIndex:
        """An empty index of firing events bucketed by these rules' ``equal`` labels (the
        pipeline keeps it current and passes it as ``firing``)."""
        return FiringIndex([rule.equal for rule in self._rules])

    def mutes(self, target: CanaryEvent, firing: Iterable[CanaryEvent] | FiringIndex) -> bool:
        """Whether any rule mutes ``target`` given the firing events (of every canary).

        ``firing`` may be a lazy iterable: it is only walked when some rule's target matchers
        match ``target``. A ``FiringIndex`` from ``index()`` gives each rule only the events
        with the target's ``equal`` label values (the same answer, without the walk).
        """
        return self.muted_by(target, firing) is not None

    def muted_by(
        self, target: CanaryEvent, firing: Iterable[CanaryEvent] | FiringIndex
    ) -> tuple[int, InhibitRule, CanaryEvent] | None:
        """The first rule (its index and itself) muting ``target``, and the firing source event
        through which it does; ``None`` when none does (``mutes``, with the reason)."""
        if not self._rules:
            return None
        cached: tuple[CanaryEvent, ...] | None = None
        for index, rule in enumerate(self._rules):
            if not matches_all(rule.target_matchers, target.labels):
                continue
            candidates: Iterable[CanaryEvent]
            if isinstance(firing, FiringIndex):
                candidates = firing.sources(index, target.labels)
            else:
                if cached is None:
                    cached = tuple(firing)
                candidates = cached
            source = rule.inhibited_by(target, candidates)
            if source is not None:
                return index, rule, source
        return None
