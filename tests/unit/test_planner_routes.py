"""The planner with fallback routes: the first route serves until its pools' day limits are used,
then the next route from the start of the call that used the last of it; per route, the tasks
it served and what they cost. Figures are worked out by hand in each test's docstring."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.config import ConfigError, parse
from actors.planner import PoolPlan, arrivals, parse_pools, simulate
from actors.route_plan import RoutePlan, from_config, simulate_routes, totals
from serve_app.cli.main import app

# a: 10 places a minute, 15 calls a day, $0.039 a call; b: 20 places a minute, no day limit, $0.067.
A = PoolPlan("a", 10, rpd=15, price_per_image=0.039)
B = PoolPlan("b", 20, price_per_image=0.067)
ROUTES = (RoutePlan("primary", (A,), price=2), RoutePlan("fallback", (B,), price=1))


def test_the_fallback_takes_over_once_the_primarys_day_limit_is_used() -> None:
    """40 users at once, 100 slots, 5 s calls. a serves 10 at 0 s and 5 more at 60 s (its
    places back a window later); the 15th call uses its day, so b serves the other 25 from
    60 s on: 20 at 60 s, 5 at 120 s. Makespan 120 + 5 = 125 s; primary 15, fallback 25;
    upstream 15 x $0.039 = $0.585 and 25 x $0.067 = $1.675; credits 30 and 25."""
    plan = simulate_routes(arrivals(40, "burst"), 100, 5.0, ROUTES)
    s = plan.schedule
    assert s.starts == (0.0,) * 10 + (60.0,) * 25 + (120.0,) * 5
    assert s.makespan == 125.0
    assert plan.routes == ("primary",) * 15 + ("fallback",) * 25
    assert plan.pools == ("a",) * 15 + ("b",) * 25
    primary, fallback = totals(plan, ROUTES)
    assert (primary.tasks, primary.first, primary.last, primary.credits) == (15, 0.0, 60.0, 30)
    assert (fallback.tasks, fallback.first, fallback.last, fallback.credits) == (25, 60.0, 120.0, 25)
    assert primary.usd == pytest.approx(0.585) and fallback.usd == pytest.approx(1.675)
    # Both pools serving all along (no day limit) would finish at 65 s; a alone at 185 s.
    assert simulate(arrivals(40, "burst"), 100, 5.0, (A, B)).makespan == 65.0
    assert simulate(arrivals(40, "burst"), 100, 5.0, (A,)).makespan == 185.0


def test_slots_held_while_the_primary_serves_bound_the_fallback_too() -> None:
    """12 users, 4 slots, 10 s calls; a has 60 places a minute but 5 calls a day, b 60 places.
    1-4 start at 0 on a, 5 at 10 s on a (a slot frees) and uses a's day; 6-8 take the other
    slots freed at 10 s, on b; 9-12 at 20 s on b. Makespan 30 s; primary 5, fallback 7."""
    routes = (RoutePlan("primary", (PoolPlan("a", 60, rpd=5),)), RoutePlan("fallback", (PoolPlan("b", 60),)))
    plan = simulate_routes(arrivals(12, "burst"), 4, 10.0, routes)
    assert plan.schedule.starts == (0.0,) * 4 + (10.0,) * 4 + (20.0,) * 4
    assert plan.schedule.makespan == 30.0
    assert [t.tasks for t in totals(plan, routes)] == [5, 7]
    assert [t.credits for t in totals(plan, routes)] == [None, None]


def test_a_route_serves_while_one_of_its_pools_has_calls_left() -> None:
    """Primary of a (10 places a minute, 3 calls a day) and c (3 places a minute, 6 a day), 12
    users at once, 1 s calls: a serves 3 at 0 s, c 3 at 0 s and 3 at 60 s (a window later),
    its 6th call using the primary's last day; b then serves the other 3 at 60 s, not at 0 s
    although its places were free all along: the primary still served until then."""
    c = PoolPlan("c", 3, rpd=6)
    routes = (RoutePlan("primary", (PoolPlan("a", 10, rpd=3), c)), RoutePlan("fallback", (B,)))
    plan = simulate_routes(arrivals(12, "burst"), 100, 1.0, routes)
    assert plan.routes == ("primary",) * 9 + ("fallback",) * 3
    assert plan.pools == ("a",) * 3 + ("c",) * 6 + ("b",) * 3
    assert plan.schedule.starts == (0.0,) * 6 + (60.0,) * 6


def test_without_day_limits_one_route_plans_as_before() -> None:
    """One route of every pool and no day limit: the same starts as `simulate`, every task on it."""
    pools = parse_pools("3x15")
    times = arrivals(60, "ramp:30")
    plan = simulate_routes(times, 40, 20.0, (RoutePlan("default", pools),), margin=0.05)
    assert plan.schedule == simulate(times, 40, 20.0, pools, margin=0.05)
    assert set(plan.routes) == {"default"}


def test_users_past_every_day_limit_never_start() -> None:
    """One route of a (15 a day): 20 users, 5 never start (inf), on no route."""
    plan = simulate_routes(arrivals(20, "burst"), 100, 5.0, ROUTES[:1])
    assert plan.schedule.starts[:15] == (0.0,) * 10 + (60.0,) * 5
    assert all(math.isinf(s) for s in plan.schedule.starts[15:])
    assert plan.routes[15:] == ("",) * 5
    assert totals(plan, ROUTES[:1])[0].tasks == 15


POOLS = [
    {"name": "a", "rpm": 10, "rpd": 15, "price_per_image": 0.039, "keys": ["key-of-pool-a-0000000000"]},
    {"name": "b", "rpm": 20, "price_per_image": 0.067, "keys": ["key-of-pool-b-0000000000"]},
]
TOML = """
[queue]
slots = 100

[[pools]]
name = "a"
rpm = 10
rpd = 15
price_per_image = 0.039
keys = ["key-of-pool-a-0000000000"]

[[pools]]
name = "b"
rpm = 20
price_per_image = 0.067
keys = ["key-of-pool-b-0000000000"]

[[routes]]
name = "primary"
pools = ["a"]
price = 2

[[routes]]
name = "fallback"
pools = ["b"]
price = 1
"""


def test_routes_come_from_the_configuration_with_limits_prices_and_windows() -> None:
    """Each route's pools carry their rate, day limit (rpd, or the spend cap's calls if lower),
    price and window; a dearer fallback is planned only for tasks whose max_price allows it."""
    routes = [
        {"name": "primary", "pools": ["a"], "price": 2},
        {"name": "fallback", "pools": ["b"], "price": 1},
    ]
    cfg = parse({"pools": POOLS, "routes": routes}, {})
    a, b = (replace(p, window=60.0) for p in (A, B))
    assert from_config(cfg, "photography") == (RoutePlan("primary", (a,), 2), RoutePlan("fallback", (b,), 1))
    capped = [{**POOLS[0], "max_spend_per_day": 0.39}, POOLS[1]]  # 10 calls' worth
    assert from_config(parse({"pools": capped, "routes": routes}, {}), "fitting")[0].pools[0].rpd == 10
    dear = [{"name": "primary", "pools": ["a"], "price": 1}, {"name": "fallback", "pools": ["b"], "price": 3}]
    cfg = parse({"pools": POOLS, "routes": dear}, {})
    assert [r.name for r in from_config(cfg, "photography")] == ["primary"]
    assert [r.name for r in from_config(cfg, "photography", max_price=3)] == ["primary", "fallback"]
    with pytest.raises(ConfigError, match="below the first route's price"):
        from_config(cfg, "photography", max_price=0)


def test_the_plan_command_plans_a_configurations_routes(tmp_path: Path) -> None:
    """`genqueue plan --config` prints the hand-worked makespan, each route's tasks, upstream
    cost and credits, and the total cost; without pools or with both it exits 2."""
    path = tmp_path / "genqueue.toml"
    path.write_text(TOML)
    runner = CliRunner()
    args = ["plan", "--users", "40", "--latency", "5", "--config", str(path), "--margin", "0"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "makespan 125.0 s" in out
    assert "primary" in out and "a (15 a day)" in out and "0.0 to 60.0 s" in out
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.count("│") == 7
    }
    assert rows["primary"][1:] == ["15", "0.0 to 60.0 s", "0.585", "30"]
    assert rows["fallback"][1:] == ["25", "60.0 to 120.0 s", "1.675", "25"]
    # One burst a day: each day's burst is this one; two go past a's 15 calls a day.
    said = " ".join(out.split())  # the console may wrap the cost line
    assert "cost $2.26 per burst" in said and "$67.80 a month at 1 burst(s) a day" in said
    twice = runner.invoke(app, [*args, "--bursts-per-day", "2"], env={"COLUMNS": "200"})
    assert twice.exit_code == 0 and "no monthly figure" in " ".join(twice.output.split())
    neither = runner.invoke(app, ["plan", "--users", "4", "--latency", "1"])
    assert neither.exit_code == 2 and "--pools" in neither.output
    both = runner.invoke(app, [*args, "--pools", "3x15"])
    assert both.exit_code == 2
