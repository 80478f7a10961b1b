"""Inhibition: "a firing source event mutes matching target events with equal labels".

Alertmanager's semantics: a target is muted when some *firing* event (an open condition) matches
the rule's source matchers, the target matches its target matchers, and both carry the same value
for every ``equal`` label (a missing label equals the empty string). An event that matches both
sides never inhibits itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from canarywatch.matchers import Matcher, matches_all
from canarywatch.model import CanaryEvent


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    def _equal(self, a: Mapping[str, str], b: Mapping[str, str]) -> bool:
        return all(a.get(name, "") == b.get(name, "") for name in self.equal)


class Inhibitor:
    def __init__(self, rules: Sequence[InhibitRule] = ()) -> None:
        self._rules = tuple(rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def mutes(self, target: CanaryEvent, firing: Iterable[CanaryEvent]) -> bool:
        """Whether any rule mutes ``target`` given the currently firing events."""
        if not self._rules:
            return False
        firing = tuple(firing)
        for rule in self._rules:
            if not matches_all(rule.target_matchers, target.labels):
                continue
            for source in firing:
                if source is target or source.labels == target.labels:
                    continue
                if matches_all(rule.source_matchers, source.labels) and rule._equal(
                    source.labels, target.labels
                ):
                    return True
        return False
