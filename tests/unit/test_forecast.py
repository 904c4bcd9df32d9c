"""The forecast: one start-time simulation for the ETA, the planner and the load test's bound, and one
throughput formula for /v1/queue, Retry-After and the burst client's bound."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.forecast import (
    PoolWindow,
    call_latency,
    makespan_at_rate,
    predict_starts,
    refusal_wait,
    slot_hold,
    start_times,
    throughput,
    throughput_bound,
    window_capacity,
)
from actors.planner import PoolPlan, simulate
from serve_app.cli.burst import bound_seconds

rates = st.lists(st.sampled_from([1, 2, 15, 60, 600]), min_size=1, max_size=3)
windows = st.sampled_from([1.0, 10.0, 60.0])
latencies = st.sampled_from([0.0, 0.5, 2.0, 20.0])


@given(count=st.integers(1, 60), slots=st.integers(1, 30), latency=latencies, rpms=rates, window=windows)
def test_the_eta_of_a_burst_is_the_planners_schedule(
    count: int, slots: int, latency: float, rpms: list[int], window: float
) -> None:
    """For idle pools and free slots, the ETA's starts are the planner's starts for a burst."""
    pools = [PoolWindow(window_capacity(rpm, window), window) for rpm in rpms]
    plans = tuple(PoolPlan(f"p{i}", rpm) for i, rpm in enumerate(rpms))
    planned = simulate([0.0] * count, slots, latency, plans, window)
    assert predict_starts(count, 0.0, slots, 0, latency, pools) == list(planned.starts)


@given(
    arrivals=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=80).map(sorted),
    slots=st.integers(1, 20),
    latency=latencies,
    capacities=st.lists(st.integers(1, 10), min_size=1, max_size=3),
    window=windows,
)
def test_no_window_holds_more_starts_than_the_pools_allow_nor_more_calls_than_slots(
    arrivals: list[float], slots: int, latency: float, capacities: list[int], window: float
) -> None:
    """Starts follow queue order, none before its arrival; no rolling window holds more starts than
    the pools' places, and no more calls run at once than there are slots."""
    starts = start_times(arrivals, [0.0] * slots, latency, [PoolWindow(c, window) for c in capacities])
    assert starts == sorted(starts)
    assert all(s >= a for a, s in zip(arrivals, starts, strict=True))
    for s in starts:
        assert sum(1 for t in starts if s <= t < s + window) <= sum(capacities)
        if latency > 0:
            assert sum(1 for t in starts if t <= s < t + latency) <= slots


def test_a_place_comes_back_one_window_after_the_start_that_took_it() -> None:
    """Two running calls hold both slots until 2 s: the third task takes a place free since 0 s at
    6 s, so that place is free again at 16 s, not 10 s; the fourth starts at 12 s."""
    pools = [PoolWindow(capacity=3, window=10.0)]
    starts = predict_starts(5, 0.0, slots=2, running=2, latency=4.0, pools=pools)
    assert starts == [2.0, 2.0, 6.0, 12.0, 12.0]


def test_a_pool_that_never_grants_gives_no_start_and_a_parked_one_starts_when_back() -> None:
    """A pool without keys (available_from inf) never starts a task; a parked pool does once back."""
    assert predict_starts(2, 0.0, 4, 0, 1.0, [PoolWindow(5, 60.0, available_from=math.inf)]) == [
        math.inf,
        math.inf,
    ]
    assert predict_starts(2, 0.0, 4, 0, 1.0, [PoolWindow(5, 60.0, available_from=30.0)]) == [30.0, 30.0]


def test_the_latency_is_the_measured_mean_or_the_configured_one_and_a_slot_holds_longer() -> None:
    """Mean of the measured calls; before any, the configured latency but at least 0.1 s; the
    slot's hold is the longer of the call and dispatch-to-outcome."""
    assert call_latency({"elapsed_sum": 30.0, "elapsed_count": 10.0}, 5.0) == 3.0
    assert call_latency({}, 5.0) == 5.0 and call_latency({}, 0.01) == 0.1
    assert slot_hold({"held_sum": 40.0, "held_count": 10.0}, 3.0) == 4.0
    assert slot_hold({"held_sum": 20.0, "held_count": 10.0}, 3.0) == 3.0 and slot_hold({}, 3.0) == 3.0


def test_throughput_is_the_smaller_of_slots_over_latency_and_the_pools_rate() -> None:
    """40 slots of 20 s calls: 2 a second; 3 pools of 15 RPM: 0.75 a second; calls that take no
    time are bound by the pools alone, and a measured mean of 0 counts as 1 ms."""
    stats = {"elapsed_sum": 200.0, "elapsed_count": 10.0}
    assert throughput(40, stats, 5.0, [15, 15, 15]) == (0.75, 20.0)
    assert throughput(4, stats, 5.0, [6000]) == (0.2, 20.0)
    assert throughput_bound(4, 0.0, 6000) == 100.0
    assert throughput(1, {"elapsed_sum": 0.0, "elapsed_count": 3.0}, 5.0, [600_000]) == (1000.0, 0.0)


def test_the_makespan_bound_is_n_over_the_rate_plus_one_call_and_never_before_the_last_arrival() -> None:
    """60 users at 0.75 a second with 20 s calls: 100 s, as the burst client's bound says."""
    assert makespan_at_rate(60, 0.75, 20.0) == 100.0 == bound_seconds(60, 40, 20.0, 45)
    assert makespan_at_rate(4, 2.0, 1.0, last_arrival=10.0) == 11.0
    assert bound_seconds(10, 4, 0.0, 60) == 10.0  # slots do not bind calls that take no time


@pytest.mark.parametrize(
    ("reason", "waiting", "user_waiting", "rate", "seconds"),
    [
        ("queue_full", 100, 0, 0.5, 2),  # one task over the limit of 100 starts in 2 s
        ("queue_full", 130, 0, 0.5, 62),
        ("user_waiting", 100, 4, 0.5, 50),  # one of four of the user's tasks per round of 100
        ("user_waiting", 1, 4, 100.0, 1),  # never under a second
        ("queue_full", 100, 0, 0.0, 1000),  # a rate of 0 counts as one task per 1,000 s
        ("user_waiting", 10_000, 1, 0.01, 3600),  # never over an hour
    ],
)
def test_a_refused_submit_waits_until_the_backlog_over_its_limit_has_started(
    reason: str, waiting: int, user_waiting: int, rate: float, seconds: int
) -> None:
    """Retry-After of a full queue or a user's full share, between 1 s and an hour."""
    assert refusal_wait(reason, waiting, 100, user_waiting, rate) == seconds
