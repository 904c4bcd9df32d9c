"""Property tests of the rolling-window limiter and the pool choice."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.audit import max_in_window
from actors.forecast import window_capacity
from actors.keypool.decide import choose, grant, next_free_at
from actors.keypool.limiter import SlidingWindowLog
from actors.keypool.state import PoolState, apply_pool

times = st.lists(st.floats(min_value=0, max_value=50, allow_nan=False), min_size=1, max_size=300).map(sorted)


@settings(max_examples=300, deadline=None)
@given(times, st.integers(1, 20), st.floats(min_value=0.1, max_value=10))
def test_no_window_ever_holds_more_than_capacity(requests: list[float], capacity: int, window: float) -> None:
    """Whatever the request times, no half-open window of `window` s holds more than `capacity` grants."""
    limiter = SlidingWindowLog(capacity=capacity, window=window)
    granted = [t for t in requests if limiter.take(t)]
    assert max_in_window(granted, window) <= capacity


@settings(max_examples=200, deadline=None)
@given(times, st.integers(1, 20), st.floats(min_value=0.1, max_value=10))
def test_a_refused_request_is_refused_only_when_the_window_is_full(
    requests: list[float], capacity: int, window: float
) -> None:
    """It refuses only when a grant would put capacity + 1 grants in some window: it wastes nothing."""
    limiter = SlidingWindowLog(capacity=capacity, window=window)
    granted: list[float] = []
    for t in requests:
        if limiter.take(t):
            granted.append(t)
        else:
            assert max_in_window([*granted, t], window) > capacity


def test_a_burst_takes_the_whole_budget_at_once_then_waits_a_window() -> None:
    """45 tokens go at t=0, the 46th waits until the first grant is a full window old."""
    limiter = SlidingWindowLog(capacity=45, window=60.0)
    assert sum(limiter.take(0.0) for _ in range(60)) == 45
    assert limiter.available(59.9) == 0 and limiter.next_free_at(30.0) == 60.0
    assert limiter.take(60.0) and limiter.available(60.0) == 44


def test_no_double_budget_across_a_fixed_window_boundary() -> None:
    """Calls at 59 s use the budget that a fixed-window counter would hand out again at 60 s."""
    limiter = SlidingWindowLog(capacity=10, window=60.0)
    assert sum(limiter.take(59.0) for _ in range(10)) == 10
    assert not limiter.take(61.0)
    assert limiter.next_free_at(61.0) == 119.0


def test_replayed_grants_rebuild_the_same_limit() -> None:
    """Recording past grants (out of order, too) restores the limiter's decisions."""
    live = SlidingWindowLog(capacity=3, window=10.0)
    for t in (1.0, 2.0, 3.0):
        live.take(t)
    rebuilt = SlidingWindowLog(capacity=3, window=10.0)
    for t in (2.0, 1.0, 3.0):
        rebuilt.record(t)
    assert list(rebuilt.log) == list(live.log)
    assert rebuilt.take(5.0) is False and rebuilt.next_free_at(5.0) == 11.0


def test_window_capacity_scales_rpm_to_the_window() -> None:
    """600 RPM over a 1 s window allows 10 calls; 15 RPM over 60 s allows 15."""
    assert window_capacity(600, 1.0) == 10
    assert window_capacity(15, 60.0) == 15
    assert window_capacity(1, 1.0) == 1


def take(pool: PoolState, at: float) -> str:
    """One token decided and folded in; its key id."""
    event = grant(pool, "t", pool.granted + 1, at)
    apply_pool(pool, event)
    return event.key_id


def test_choose_prefers_the_pool_with_most_budget_and_rotates_keys() -> None:
    """Tokens come from the fullest pool; a pool's keys take turns."""
    a = PoolState(name="a", rpm=120, window=1.0, key_ids=("a#1", "a#2"))
    b = PoolState(name="b", rpm=60, window=1.0, key_ids=("b#1",))
    pool = choose([a, b], 0.0)
    assert pool is a
    assert [take(a, 0.0), take(a, 0.0)] == ["a#1", "a#2"]
    assert choose([a, b], 0.0) is b
    take(b, 0.0)
    assert choose([a, b], 0.5) is None
    assert next_free_at([a, b], 0.5) == 1.0


# One step on a limiter: ("take", t), ("record", t), ("move", index into the log, later by d),
# ("resize", capacity).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.floats(0, 30)),
        st.tuples(st.just("record"), st.floats(0, 30)),
        st.tuples(st.just("move"), st.integers(0, 40), st.floats(-0.5, 2)),
        st.tuples(st.just("resize"), st.integers(1, 12)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(1, 12), st.sampled_from([0.5, 1.0, 3.0]))
def test_the_log_is_the_sorted_list_of_grants_that_may_bind(
    ops: list[tuple], capacity: int, window: float
) -> None:
    """Taken, replayed, re-dated and resized grants leave the log equal to a plain sorted list
    kept by the class's rules, and `available` counts that list's grants less than a window old."""
    limiter = SlidingWindowLog(capacity, window)
    model: list[float] = []

    def forget() -> None:
        while len(model) > capacity and model[-1] - model[0] >= window:
            model.pop(0)

    now = 0.0
    for op in ops:
        if op[0] == "take":
            now = max(now, op[1])
            allowed = len(model) < capacity or now - model[-capacity] >= window
            assert limiter.take(now) == allowed
            if allowed:
                bisect.insort(model, now)
        elif op[0] == "record":
            limiter.record(op[1])
            bisect.insort(model, op[1])
        elif op[0] == "move" and model:
            old = model[op[1] % len(model)]
            limiter.move(old, old + op[2])
            if op[2] >= 0:
                model.remove(old)
                bisect.insort(model, old + op[2])
        elif op[0] == "resize":
            capacity = op[1]
            limiter.resize(capacity)
        forget()
        assert list(limiter.log) == model
        assert limiter.available(now) == max(0, capacity - sum(1 for t in model if now - t < window))


@settings(max_examples=300, deadline=None)
@given(times, st.integers(1, 20), st.floats(min_value=0.1, max_value=10), st.integers(1, 22))
def test_next_free_at_for_several_places_is_the_first_moment_they_are_all_free(
    requests: list[float], capacity: int, window: float, places: int
) -> None:
    """`next_free_at(now, places)` is the first moment at or after `now` with `places` grants
    allowed: that many are available then and fewer just before (inf: the window holds fewer)."""
    limiter = SlidingWindowLog(capacity=capacity, window=window)
    for t in requests:
        limiter.take(t)
    now = requests[-1]
    at = limiter.next_free_at(now, places)
    if places > capacity:
        assert at == float("inf")
        return
    assert limiter.available(at) >= places
    if at > now:
        assert limiter.available(at - 1e-9 * max(1.0, at)) < places
