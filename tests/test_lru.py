"""``BoundedLru``: the one bounded least-recently-used memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarywatch.lru import BoundedLru


def test_the_least_recently_put_is_evicted_first() -> None:
    lru: BoundedLru[str, int] = BoundedLru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.put("c", 3)
    assert len(lru) == 2
    assert "a" not in lru
    assert list(lru) == ["b", "c"]


def test_a_read_refreshes_by_default() -> None:
    lru: BoundedLru[str, int] = BoundedLru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)
    assert list(lru) == ["a", "c"]


def test_a_read_can_leave_the_order_alone() -> None:
    lru: BoundedLru[str, int] = BoundedLru(2, refresh_on_read=False)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)
    assert list(lru) == ["b", "c"]


def test_put_overwrites_and_refreshes() -> None:
    lru: BoundedLru[str, int] = BoundedLru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.put("a", 10)
    lru.put("c", 3)
    assert list(lru) == ["a", "c"]
    assert lru.get("a") == 10


def test_touch_refreshes_only_what_is_remembered() -> None:
    lru: BoundedLru[str, None] = BoundedLru(2, refresh_on_read=False)
    lru.put("a", None)
    lru.put("b", None)
    assert lru.touch("a")
    assert not lru.touch("z")
    assert "z" not in lru
    lru.put("c", None)
    assert list(lru) == ["a", "c"]


def test_membership_and_iteration_never_refresh() -> None:
    lru: BoundedLru[str, int] = BoundedLru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert "a" in lru
    assert list(reversed(lru)) == ["b", "a"]
    lru.put("c", 3)
    assert list(lru) == ["b", "c"]


def test_absent_keys_read_as_none_and_pop_forgets() -> None:
    lru: BoundedLru[str, int] = BoundedLru(3)
    assert lru.get("a") is None
    assert lru.pop("a") is None
    lru.put("a", 1)
    assert lru.pop("a") == 1
    assert len(lru) == 0
    assert "a" not in lru


def test_maximum_zero_remembers_nothing_and_negative_is_refused() -> None:
    lru: BoundedLru[str, int] = BoundedLru(0)
    lru.put("a", 1)
    assert len(lru) == 0
    assert lru.get("a") is None
    with pytest.raises(ValueError, match="maximum"):
        BoundedLru(-1)


_OPS = st.lists(
    st.tuples(st.sampled_from(["put", "get", "touch", "pop"]), st.integers(0, 6)), max_size=60
)


@given(maximum=st.integers(0, 4), refresh=st.booleans(), ops=_OPS)
def test_it_behaves_like_a_list_ordered_by_use(
    maximum: int, refresh: bool, ops: list[tuple[str, int]]
) -> None:
    """Against a naive model: a list of (key, value), least recently used first."""
    lru: BoundedLru[int, int] = BoundedLru(maximum, refresh_on_read=refresh)
    model: list[tuple[int, int]] = []

    def find(key: int) -> int | None:
        return next((i for i, (k, _) in enumerate(model) if k == key), None)

    for step, (op, key) in enumerate(ops):
        at = find(key)
        if op == "put":
            if at is not None:
                del model[at]
            model.append((key, step))
            del model[: max(0, len(model) - maximum)]
            lru.put(key, step)
        elif op == "get":
            expected = None if at is None else model[at][1]
            if at is not None and refresh:
                model.append(model.pop(at))
            assert lru.get(key) == expected
        elif op == "touch":
            if at is not None:
                model.append(model.pop(at))
            assert lru.touch(key) is (at is not None)
        else:
            expected = None if at is None else model.pop(at)[1]
            assert lru.pop(key) == expected
        assert list(lru) == [k for k, _ in model]
        assert len(lru) <= maximum
