"""The ETA range: every token the tasks ahead still need counts, slots free over the spread of call
times, positions square with a stale snapshot, and an upstream's calls are not the offline ones."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import eta_range
from actors.eta_range import CallTimes, Snapshot
from actors.forecast import PoolWindow, predict_starts, prior_latency, start_table

NOW = 1_700_000_000.0
UNIFORM = tuple(0.75 + 0.5 * i / 20 for i in range(21))  # 1 s calls, +- 0.25 s
TWO_SECONDS = CallTimes(2.0, (2.0,))


def snapshot(
    slots: int,
    pools: list[PoolWindow],
    calls: Sequence[float] = (),
    needing: int = 0,
    times: CallTimes = TWO_SECONDS,
    outcomes: float = 0.0,
) -> Snapshot:
    """A snapshot at NOW; `running` counts the calls and the tasks needing a token."""
    return Snapshot(
        at=NOW,
        slots=slots,
        pools=tuple(pools),
        calls=tuple(calls),
        needing=tuple(f"t{i}" for i in range(needing)),
        running=len(calls) + needing,
        outcomes=outcomes,
        times=times,
        handoff=0.0,
    )


def forecast(s: Snapshot) -> eta_range.Forecast:
    """The snapshot's forecast for 1,000 positions."""
    return eta_range.build(s, 1000, random.Random(0))


def p50(f: eta_range.Forecast, ahead: int) -> float:
    """The p50 seconds from NOW for a task with `ahead` tasks before it."""
    answer = f.range(ahead, NOW)
    assert answer is not None
    return answer[0]


def test_tokens_that_dispatched_tasks_still_need_push_a_waiting_task_to_the_next_window() -> None:
    """The default set-up half a second into a burst: 35 calls took 35 of the 45 places, 5 more
    tasks hold slots and wait for theirs. The task at position 8 needs the 14th place from now:
    the 10 left go to the 5 slot holders and positions 0-4, so it starts a window after the
    first grants, not at once."""
    grants = [NOW - 0.5] * 12
    pools = [PoolWindow(15, 60.02, tuple(grants[:n])) for n in (12, 12, 11)]
    f = forecast(snapshot(40, pools, [NOW - 0.5] * 35, needing=5))
    ahead = f.ahead(8, running=40, stats={})
    assert ahead == 13
    assert p50(f, ahead) == pytest.approx(59.52, abs=0.01)
    assert p50(f, f.ahead(4, running=40, stats={})) < 2.0


def test_counters_read_with_a_position_square_it_with_an_older_or_newer_snapshot() -> None:
    """Tasks dispatched since the snapshot (more running) and those that also ended since (more
    outcomes) still count as needing places the snapshot did not see taken; counters read
    before the snapshot count the other way."""
    f = forecast(snapshot(10, [PoolWindow(100, 60.0)], [NOW] * 8, needing=2, outcomes=5.0))
    later = {"succeeded": 6.0, "attempts_failed": 1.0, "throttled": 1.0}
    assert f.ahead(4, running=12, stats=later) == 4 + 2 + 2 + 3
    assert f.ahead(4, running=9, stats={"succeeded": 4.0}) == 4 + 2 - 1 - 1
    assert f.ahead(0, running=0, stats={}) == 0


def test_a_slot_holder_waiting_for_its_token_is_told_its_turn_among_them() -> None:
    """The third slot holder without a token has two ahead of it; one dispatched after the
    snapshot comes after all of them."""
    f = forecast(snapshot(10, [PoolWindow(1, 10.0)], needing=3))
    assert f.dispatched_ahead("t2", running=3, stats={}) == 2
    assert f.dispatched_ahead("new", running=4, stats={}) == 3
    assert p50(f, 2) == pytest.approx(20.0)


def test_a_bursts_first_calls_free_their_slots_over_the_spread_of_call_times() -> None:
    """Ten 1 s +- 0.25 s calls just started on all ten slots: the first slot frees well before a
    second, the tenth after it, and each p90 lies beyond its p50."""
    f = forecast(snapshot(10, [PoolWindow(10_000, 60.0)], [NOW] * 10, times=CallTimes(1.0, UNIFORM)))
    first, tenth = f.range(0, NOW), f.range(9, NOW)
    assert first is not None and tenth is not None
    assert 0.75 <= first[0] < 0.9 and 1.1 < tenth[0] <= 1.25
    assert first[1] > first[0] and tenth[1] > tenth[0]


def test_the_range_narrows_relative_to_the_wait_deep_in_a_slot_bound_queue() -> None:
    """Slow and fast calls even out over many calls in a row: the p90's lead over the p50 is a
    smaller share of the wait 200 tasks back than 15 tasks back."""
    f = forecast(snapshot(10, [PoolWindow(10_000, 60.0)], [NOW] * 10, times=CallTimes(1.0, UNIFORM)))
    near, far = f.range(15, NOW), f.range(200, NOW)
    assert near is not None and far is not None
    assert far[0] == pytest.approx(20.0, rel=0.05)
    assert (far[1] - far[0]) / far[0] < (near[1] - near[0]) / near[0]


def test_no_pool_that_will_ever_grant_gives_no_eta() -> None:
    """Every pool parked for good: no range."""
    f = forecast(snapshot(4, [PoolWindow(10, 60.0, (), math.inf)]))
    assert f.range(0, NOW) is None


def test_an_upstream_call_is_assumed_to_take_its_own_time_until_one_is_measured() -> None:
    """Gemini: GEMINI_CALL_SECONDS (at most the timeout), not the offline provider's latency; a
    call in flight for longer raises it; a measured mean replaces it; recent calls give the
    spread."""
    assert prior_latency("gemini", 2.0, 120.0) == 10.0
    assert prior_latency("gemini", 2.0, 5.0) == 5.0
    assert prior_latency("offline", 2.0, 120.0) == 2.0
    # [provider] expected_call_seconds, when set, is the prior of either provider.
    assert prior_latency("gemini", 2.0, 120.0, expected=0.5) == 0.5
    assert prior_latency("gemini", 2.0, 5.0, expected=30.0) == 5.0
    assert prior_latency("offline", 2.0, 120.0, expected=0.01) == 0.1
    spread = eta_range.prior_times("gemini", 10.0, 0.5, 120.0)
    assert min(spread) >= 5.0 and max(spread) <= 20.0
    assert eta_range.call_times({}, [], spread, ran=0.0).mean == pytest.approx(sum(spread) / len(spread))
    assert eta_range.call_times({}, [], spread, ran=30.0).mean == 30.0
    measured = eta_range.call_times({"elapsed_sum": 12.0, "elapsed_count": 3.0}, [], spread, ran=0.0)
    assert measured.mean == 4.0
    recent = eta_range.call_times({}, [1.0] * 4 + [3.0] * 4, spread, ran=0.0)
    assert recent.mean == 2.0 and recent.p90 == 3.0
    assert eta_range.prior_times("offline", 2.0, 0.5, 120.0) == pytest.approx(
        tuple(2.0 + 0.5 * ((2 * i + 1) / 9 - 1) for i in range(9))
    )


def test_a_place_granted_again_late_each_window_counts_the_lateness() -> None:
    """Two places a 1 s window, each taken again 50 ms after it frees: a 50 ms reuse delay; a
    place taken again only long after it freed (nothing waited) says nothing."""
    grants = [(0.05 * (k // 2) + 1.0 * (k // 2), 2) for k in range(12)]
    assert eta_range.reuse_delay(grants, 1.0) == pytest.approx(0.05)
    idle = [(5.0 * (k // 2), 2) for k in range(12)]
    assert eta_range.reuse_delay(idle, 1.0) == 0.0


def test_the_hand_off_comes_from_recent_calls_or_the_calls_in_flight_and_is_capped() -> None:
    """Held time beyond the call, else dispatch to start of the calls in flight; at most the cap,
    since more is a wait for quota."""
    assert eta_range.handoff([0.01, 0.02, 0.03], [0.5]) == 0.02
    assert eta_range.handoff([], [0.04]) == 0.04
    assert eta_range.handoff([30.0, 40.0], []) == eta_range.HANDOFF_CAP
    assert eta_range.handoff([], []) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    slots=st.integers(1, 12),
    capacity=st.integers(1, 20),
    window=st.sampled_from([1.0, 6.0, 60.0]),
    calls=st.lists(st.floats(0.0, 3.0), max_size=12),
    needing=st.integers(0, 5),
    mean=st.sampled_from([0.1, 0.5, 2.0]),
)
def test_p50_grows_with_the_tasks_ahead_and_p90_never_falls_below_it(
    slots: int, capacity: int, window: float, calls: list[float], needing: int, mean: float
) -> None:
    """For any queue: a task further back never starts sooner, and its p90 is at least its p50."""
    times = CallTimes(mean, (0.5 * mean, mean, 1.5 * mean))
    held = [NOW - ran for ran in calls[:slots]]
    f = forecast(
        snapshot(slots, [PoolWindow(capacity, window)], held, needing=min(needing, slots), times=times)
    )
    previous = 0.0
    for ahead in range(0, 60, 3):
        answer = f.range(ahead, NOW)
        assert answer is not None
        assert answer[0] >= previous - 1e-9 and answer[1] >= answer[0]
        previous = answer[0]


@settings(max_examples=80, deadline=None)
@given(
    slots=st.integers(1, 8),
    busy=st.lists(st.integers(0, 64), max_size=8),
    capacity=st.integers(1, 12),
    window=st.sampled_from([1.0, 10.0, 60.0]),
    latency=st.sampled_from([0.0, 0.5, 2.0, 7.25]),
)
def test_the_start_table_with_held_slots_gives_the_simulations_starts(
    slots: int, busy: list[int], capacity: int, window: float, latency: float
) -> None:
    """Slots held until given times: the table's starts are the simulation's at every position."""
    frees = [NOW + t / 16 for t in busy[:slots]]
    pools = [PoolWindow(capacity, window, (NOW - window / 4,))]
    table = start_table(NOW, slots, len(frees), latency, pools, 200, busy=frees)
    starts = predict_starts(120, NOW, slots, len(frees), latency, pools, busy=frees)
    for position, start in enumerate(starts):
        assert table.eta(position, NOW) == pytest.approx(start - NOW, abs=1e-6)
