"""The start-time prediction follows the rolling windows, the slots and the latency."""

from __future__ import annotations

import pytest

from actors.forecast import PoolWindow, eta_seconds, predict_starts, token_times


def test_an_idle_pool_hands_out_its_budget_now_then_a_window_later() -> None:
    """15 tokens now, the 16th one window later, the 31st two windows later."""
    times = token_times(PoolWindow(capacity=15, window=60.0, grants=()), now=0.0)
    first = [next(times) for _ in range(31)]
    assert first[:15] == [0.0] * 15 and first[15] == 60.0 and first[30] == 120.0


def test_logged_grants_return_one_window_after_they_were_made() -> None:
    """With 2 of 3 used at t=10 and t=20 (window 30), tokens come at now, 40 and 50."""
    times = token_times(PoolWindow(capacity=3, window=30.0, grants=(10.0, 20.0)), now=25.0)
    assert [next(times) for _ in range(4)] == [25.0, 40.0, 50.0, 55.0]


def test_the_sixty_user_burst_starts_45_at_once_and_15_a_window_later() -> None:
    """3 pools of 15 per minute, 40 slots, 2 s calls: 40 start now, 5 at 2 s, 15 at 60 s."""
    pools = [PoolWindow(capacity=15, window=60.0, grants=())] * 3
    starts = predict_starts(60, 0.0, slots=40, running=0, latency=2.0, pools=pools)
    assert starts[:40] == [0.0] * 40
    assert starts[40:45] == [2.0] * 5
    assert starts[45:] == [60.0] * 15


def test_slots_bound_when_tokens_are_plenty() -> None:
    """With 2 slots and 1 s calls, position 5 starts after 2 full rounds, position 0 now."""
    pools = [PoolWindow(capacity=1000, window=1.0, grants=())]
    assert eta_seconds(0, 0.0, 2, 0, 1.0, pools) == 0.0
    assert eta_seconds(5, 0.0, 2, 0, 1.0, pools) == pytest.approx(2.0)
    assert eta_seconds(1, 0.0, 2, 2, 1.0, pools) == pytest.approx(0.5)


def test_histogram_quantiles_interpolate_within_buckets() -> None:
    """Quantiles of cumulative buckets interpolate like Prometheus's histogram_quantile."""
    from serve_app.cli.top import histogram_quantile

    buckets = [(1.0, 0.0), (2.0, 10.0), (4.0, 20.0), (float("inf"), 20.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(2.0)
    assert histogram_quantile(buckets, 0.75) == pytest.approx(3.0)
    assert histogram_quantile(buckets, 0.25) == pytest.approx(1.5)
    assert histogram_quantile([], 0.5) == 0.0
