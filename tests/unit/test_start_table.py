"""The start table: the forecast's starts for every queue position at once, exact inside the table and
beyond it where the schedule repeats, built in bounded time and memory whatever the pools' capacity."""

from __future__ import annotations

import math
import random
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.forecast import (
    GRANT_GROUPS,
    TABLE_STEPS,
    PoolWindow,
    StartTable,
    eta_seconds,
    predict_starts,
    start_table,
)

# Binary fractions only, so that the simulation and the table add exactly the same numbers and
# a tie between two pools' places is a tie in both (else rounding, not the model, decides it).
WINDOWS = [1.0, 10.0, 60.0, 60.25]
LATENCIES = [0.0, 0.5, 1.0, 2.0, 7.25, 20.0]


@st.composite
def pool_windows(draw: st.DrawFn, now: float) -> PoolWindow:
    """A pool: capacity, window, grants logged in its window, and when it may grant again."""
    capacity = draw(st.integers(1, 20))
    window = draw(st.sampled_from(WINDOWS))
    ticks = draw(st.lists(st.integers(0, int(window * 64)), max_size=capacity))
    grants = tuple(sorted(now - t / 64 for t in ticks))
    opens = draw(st.sampled_from([0.0, now + 5.0, now + 0.5, math.inf]))
    return PoolWindow(capacity, window, grants, opens)


@st.composite
def configurations(draw: st.DrawFn) -> tuple[float, int, int, float, list[PoolWindow], int]:
    """(now, slots, running, latency, pools, max_steps): a queue as the ETA sees it."""
    now = draw(st.sampled_from([0.0, 1000.0, 1_700_000_000.0]))
    pools = draw(st.lists(pool_windows(now), min_size=1, max_size=3))
    return (
        now,
        draw(st.integers(1, 12)),
        draw(st.integers(0, 14)),
        draw(st.sampled_from(LATENCIES)),
        pools,
        draw(st.sampled_from([20, 200, TABLE_STEPS])),
    )


def simulated(
    count: int, now: float, slots: int, running: int, latency: float, pools: list[PoolWindow]
) -> list[float]:
    """Seconds from `now` to each of the first `count` starts, by the forecast's own simulation."""
    return [s - now for s in predict_starts(count, now, slots, running, latency, pools)]


@settings(max_examples=300, deadline=None)
@given(configurations())
def test_the_table_gives_the_simulations_starts_inside_it_and_beyond_where_it_repeats(
    case: tuple[float, int, int, float, list[PoolWindow], int],
) -> None:
    """Every position inside the table, and every one beyond it when a period was found, starts
    when the simulation says (to a microsecond); beyond a table without a period the starts
    still never go back and never come before the table's last."""
    now, slots, running, latency, pools, steps = case
    table = start_table(now, slots, running, latency, pools, max_steps=steps)
    count = min(max(2 * table.end, table.end + 3 * table.period + 50, 200), 4000)
    expected = simulated(count, now, slots, running, latency, pools)
    got = [table.eta(p, now) for p in range(count)]
    for p, (want, have) in enumerate(zip(expected, got, strict=True)):
        if p < table.end or table.period:
            assert have == want or abs(have - want) <= 1e-6, (p, table.end, table.period, have, want)
    assert got == sorted(got)


def test_the_sixty_user_burst_repeats_every_window_and_is_exact_at_position_ten_thousand() -> None:
    """Three pools of 15 a minute with distinct grants, 40 slots: the table finds the window's period
    within a few windows and answers position 10,000 as the simulation does."""
    rng = random.Random(7)
    now = 1_700_000_000.0
    pools = [
        PoolWindow(15, 60.02, tuple(sorted(now - rng.uniform(0, 60) for _ in range(15)))) for _ in range(3)
    ]
    table = start_table(now, 40, 10, 2.0, pools)
    assert table.period == 45 and table.end < 200 and len(table.offsets) < 200
    for position in (0, 10, 44, 45, 1000, 10_000):
        # A millisecond: the simulation adds 60.02 s to epoch times 222 times, rounding each time.
        assert abs(table.eta(position, now) - eta_seconds(position, now, 40, 10, 2.0, pools)) < 1e-3


def test_a_pool_of_six_million_a_minute_builds_a_small_table_quickly() -> None:
    """No list as long as a window's capacity: a 6,000,000-a-minute pool with 120,000 grants logged
    builds within a bounded number of groups and a few megabytes, and position 10,000 starts as
    the slots allow."""
    rng = random.Random(3)
    now = 1_700_000_000.0
    grants = tuple(sorted(now - rng.uniform(0, 60) for _ in range(120_000)))
    pools = [PoolWindow(6_000_000, 60.0, grants)]
    del rng
    tracemalloc.start()
    try:
        table = start_table(now, 40, 0, 0.004, pools, horizon=10_040)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, f"{peak} bytes"
    assert len(table.offsets) <= TABLE_STEPS and table.end >= 10_040
    # 40 slots of 4 ms calls: position 10,000 starts after 250 rounds.
    assert abs(table.eta(10_000, now) - 1.0) < 1e-6


def test_many_logged_grants_count_in_groups_late_by_at_most_a_part_of_the_window() -> None:
    """With more grants than GRANT_GROUPS, each place counts as free at the end of its 1/GRANT_GROUPS of
    the window: never earlier than the simulation, and at most that part later."""
    rng = random.Random(5)
    now = 1000.0
    pools = [PoolWindow(3000, 60.0, tuple(sorted(now - rng.uniform(0, 60) for _ in range(2500))))]
    table = start_table(now, 200, 0, 0.5, pools)
    expected = simulated(5000, now, 200, 0, 0.5, pools)
    part = 60.0 / GRANT_GROUPS
    for p in range(0, 5000, 7):
        assert expected[p] - 1e-9 <= table.eta(p, now) <= expected[p] + part + 1e-9


def test_no_serving_pool_means_no_start_and_a_stale_table_counts_from_its_own_time() -> None:
    """Pools that never grant give inf everywhere; a table asked later subtracts the time passed."""
    never = start_table(0.0, 4, 0, 1.0, [PoolWindow(5, 60.0, available_from=math.inf)])
    assert math.isinf(never.eta(0, 0.0)) and math.isinf(never.eta(10_000, 0.0))
    table = start_table(100.0, 2, 0, 1.0, [PoolWindow(1000, 1.0)])
    assert table.eta(5, 100.0) == 2.0 and table.eta(5, 100.5) == 1.5
    assert isinstance(table, StartTable) and table.period == 2 and table.period_seconds == 1.0
