"""The capacity planner: the 60-user burst, ramps, pool specs and the cheapest configuration."""

from __future__ import annotations

import pytest

from actors.planner import PoolPlan, arrivals, bands, cheapest, parse_pools, simulate


def test_sixty_users_on_three_projects_at_15_rpm_start_45_then_15_a_window_later() -> None:
    """The origin scenario: 45 start at once, the other 15 at 60 s; makespan 60 s + latency."""
    pools = parse_pools("3x15")
    s = simulate(arrivals(60, "burst"), slots=40, latency=20.0, pools=pools)
    assert s.starts.count(0.0) == 40  # 40 slots: five more wait for a slot, not a token
    assert sorted(s.starts)[44] == 20.0 and sorted(s.starts)[45] == 60.0
    assert s.makespan == 80.0
    assert bands(s) == [(1, 45, 0.0, 20.0), (46, 60, 60.0, 60.0)]


def test_slots_bind_when_tokens_are_plentiful() -> None:
    """20 slots, 0.5 s calls, 10 projects at 6,000 RPM: 40 tasks per second, in waves of 20."""
    s = simulate(arrivals(100, "burst"), slots=20, latency=0.5, pools=parse_pools("10x6000"))
    assert s.makespan == pytest.approx(2.5)
    assert max(s.waits) == pytest.approx(2.0)


def test_a_ramp_spreads_arrivals_and_nobody_starts_before_arriving() -> None:
    """Arrivals over 60 s on a budget of 45 a window: the last arrivals wait for the next window."""
    t = arrivals(60, "ramp:60")
    assert t[0] == 0.0 and t[-1] == pytest.approx(59.0)
    s = simulate(t, slots=40, latency=2.0, pools=parse_pools("3x15"))
    assert all(start >= arrived for arrived, start in zip(s.arrivals, s.starts, strict=True))
    assert s.starts[45] == 60.0  # the 46th reuses the first call's place a window later


def test_the_margin_delays_each_reuse_of_a_place() -> None:
    """With a 0.05 s margin the second window starts at 60.05 s."""
    s = simulate(arrivals(2, "burst"), slots=5, latency=1.0, pools=(PoolPlan("a", 1),), margin=0.05)
    assert s.starts == (0.0, 60.05)


@pytest.mark.parametrize("spec", ["", "3x", "x15", "0x15", "a:", "a:0", "a:1,a:2", "a:b"])
def test_bad_pool_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_pools(spec)


def test_named_pools_keep_their_names_and_rates() -> None:
    assert parse_pools("a:15,b:360") == (PoolPlan("a", 15), PoolPlan("b", 360))


def test_bad_arrivals_are_refused() -> None:
    for arrival in ("ramp", "ramp:-1", "drip:5"):
        with pytest.raises(ValueError):
            arrivals(10, arrival)


def test_cheapest_configuration_meets_the_target_with_fewest_projects_then_slots() -> None:
    """60 users, 20 s calls, 15 RPM projects, everyone started within 1 s: 4 projects, 60 slots."""
    t = arrivals(60, "burst")
    assert cheapest(t, latency=20.0, rpm=15, target_wait=1.0) == (4, 60)
    # Waiting up to a window: 2 projects (30 calls now, 30 a window later) and fewer slots.
    count, slots = cheapest(t, latency=20.0, rpm=15, target_wait=60.0) or (0, 0)
    assert count == 2 and slots < 60
    assert max(simulate(t, slots, 20.0, parse_pools("2x15")).waits) <= 60.0
    assert max(simulate(t, slots - 1, 20.0, parse_pools("2x15")).waits) > 60.0
    assert cheapest(t, latency=20.0, rpm=15, target_wait=0.5, max_pools=2) is None


def test_the_plan_command_prints_the_bands_the_cost_and_the_cheapest_setup() -> None:
    """`genqueue plan` for the origin scenario; a bad spec exits 2 with the reason."""
    from typer.testing import CliRunner

    from serve_app.cli.main import app

    runner = CliRunner()
    args = ["plan", "--users", "60", "--pools", "3x15", "--slots", "40", "--latency", "20"]
    result = runner.invoke(app, [*args, "--target-wait", "1", "--price-per-image", "0.1"])
    assert result.exit_code == 0, result.output
    assert "46-60" in result.output and "at 60.0 s" in result.output and "makespan 80.0 s" in result.output
    assert "$6.00 per burst" in result.output and "$180.00 a month" in result.output
    assert "4 project(s) at 15 RPM, 60 slots" in result.output
    bad = runner.invoke(app, ["plan", "--users", "10", "--pools", "3y", "--slots", "2", "--latency", "1"])
    assert bad.exit_code == 2 and "COUNTxRPM" in bad.output
