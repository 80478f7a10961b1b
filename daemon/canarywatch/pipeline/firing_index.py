"""The firing inhibition sources of every canary, bucketed by each inhibit rule's ``equal`` labels.

Inhibition looks for a firing source with the target's values of a rule's ``equal`` labels
(``pipeline.inhibit``). Walking every canary's firing events for each target made inhibition
O(firing events) per transition: at a few thousand canaries it was most of the pipeline's time
(``bench/README.md``, issue 17). This index answers "the firing events whose ``equal`` labels
are these values" with one dict lookup per rule.

It is kept up to date by whoever changes what fires: the pipeline calls ``update`` with a
canary's firing events after every correlation of that canary (the correlator changes only the
correlated canary's state). Candidates come out in the order a walk of the correlator would
give (canaries in the order first seen, each canary's events in its own order), so the source
an explanation names is the same as without the index.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from canarywatch.model import CanaryEvent, CanaryRef

EqualKey = tuple[str, ...]


def equal_key(equal: Sequence[str], labels: Mapping[str, str]) -> EqualKey:
    """The values of the ``equal`` labels (a missing label is the empty string, as in
    Alertmanager's ``hasEqual``)."""
    return tuple(labels.get(name, "") for name in equal)


class FiringIndex:
    """Firing events per (rule, values of the rule's ``equal`` labels), in walk order."""

    def __init__(self, equals: Sequence[Sequence[str]]) -> None:
        self._equals = tuple(tuple(e) for e in equals)
        self._order: dict[CanaryRef, int] = {}
        self._held: dict[CanaryRef, tuple[CanaryEvent, ...]] = {}
        self._buckets: list[dict[EqualKey, dict[CanaryRef, list[CanaryEvent]]]] = [
            {} for _ in self._equals
        ]

    def update(self, canary: CanaryRef, firing: Sequence[CanaryEvent]) -> None:
        """``canary``'s firing events are now ``firing`` (all, in the correlator's order)."""
        if canary not in self._order:
            self._order[canary] = len(self._order)
        old = self._held.get(canary, ())
        held = tuple(e for e in firing if e.spec.opens is not None)
        if len(old) == len(held) and all(a is b for a, b in zip(old, held, strict=True)):
            return
        for equal, buckets in zip(self._equals, self._buckets, strict=True):
            for key in {equal_key(equal, e.labels) for e in old}:
                bucket = buckets.get(key)
                if bucket is not None:
                    bucket.pop(canary, None)
                    if not bucket:
                        del buckets[key]
            grouped: dict[EqualKey, list[CanaryEvent]] = {}
            for event in held:
                grouped.setdefault(equal_key(equal, event.labels), []).append(event)
            for key, events in grouped.items():
                self._insert(buckets.setdefault(key, {}), canary, events)
        if held:
            self._held[canary] = held
        else:
            self._held.pop(canary, None)

    def _insert(
        self,
        bucket: dict[CanaryRef, list[CanaryEvent]],
        canary: CanaryRef,
        events: list[CanaryEvent],
    ) -> None:
        """Add ``canary``'s events to ``bucket``, keeping the bucket in first-seen canary order."""
        rank = self._order[canary]
        last = next(reversed(bucket), None)
        bucket[canary] = events
        if last is not None and self._order[last] > rank:
            ordered = sorted(bucket.items(), key=lambda item: self._order[item[0]])
            bucket.clear()
            bucket.update(ordered)

    def sources(self, rule: int, labels: Mapping[str, str]) -> Iterator[CanaryEvent]:
        """Firing events whose ``equal`` labels (of rule number ``rule``) equal ``labels``'."""
        bucket = self._buckets[rule].get(equal_key(self._equals[rule], labels))
        if bucket:
            for events in bucket.values():
                yield from events
