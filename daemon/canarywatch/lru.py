"""A bounded least-recently-used memory, once: the one shape behind every "remember the last N".

The normalisers remember the last thing seen per key (an Event object, a Canary status, a
cluster's scrape) to tell news from repeats; the Events source remembers which
``(uid, resourceVersion)`` it already emitted; the simulator's Event recorder keeps client-go's
4096-entry caches. Each needs the same three moves: store a value as the most recently used,
refresh a key when it is used again, and forget the least recently used once past a maximum.

What "used" means differs, so it is chosen, not assumed: ``put`` always makes a key the most
recent; ``get`` does too unless ``refresh_on_read=False`` (a memory ordered by *write*, where a
look-up such as "the latest scrape of any cluster" must not reorder it); ``touch`` refreshes on
purpose; ``in`` and iteration never do.

Not thread-safe; like the rest of canarywatch, one owner on one event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["BoundedLru"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """At most ``maximum`` entries; past it the least recently used is evicted first.

        seen: BoundedLru[str, int] = BoundedLru(2)
        seen.put("a", 1); seen.put("b", 2)
        seen.get("a")          # 1, and "a" is now the most recent
        seen.put("c", 3)       # evicts "b"

    ``maximum=0`` remembers nothing (every ``put`` is evicted at once).
    """

    __slots__ = ("_data", "_maximum", "_refresh_on_read")

    def __init__(self, maximum: int, *, refresh_on_read: bool = True) -> None:
        if maximum < 0:
            raise ValueError("maximum must not be negative")
        self._maximum = maximum
        self._refresh_on_read = refresh_on_read
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is remembered; never refreshes it."""
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first; never refreshes. Do not change the memory while
        iterating."""
        return iter(self._data)

    def __reversed__(self) -> Iterator[K]:
        """Keys, most recently used first; never refreshes."""
        return reversed(self._data)

    def get(self, key: K) -> V | None:
        """The value of ``key`` (``None`` when absent); refreshes it unless the memory was made
        with ``refresh_on_read=False``."""
        if self._refresh_on_read and key in self._data:
            self._data.move_to_end(key)
        return self._data.get(key)

    def touch(self, key: K) -> bool:
        """Make ``key`` the most recently used if it is remembered; say whether it was."""
        if key not in self._data:
            return False
        self._data.move_to_end(key)
        return True

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` under ``key`` as the most recently used; evict the least
        recently used entries past the maximum."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._maximum:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value, or ``None`` when it was not remembered."""
        return self._data.pop(key, None)
