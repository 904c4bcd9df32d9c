"""The 409 `deadline-unreachable` under fallback routes: which pools a task may use as charged,
which dearer routes a higher `max_price` opens, their ETA from the forecast's snapshot with
only their pools' windows, and the answer that names those that would meet the deadline."""

from __future__ import annotations

import random
from typing import Any

from actors.config import Config, Route, parse
from actors.eta_range import CallTimes, Snapshot, build
from actors.forecast import PoolWindow
from events.store import QueueCounts
from serve_app.http.deadlines import (
    Alternative,
    alternatives,
    route_eta,
    route_forecast,
    route_sets,
    route_windows,
    unreachable,
)
from serve_app.http.estimates import Eta

NOW = 1_000_000.0
IDLE = QueueCounts(waiting=0, running=0, stats={})


def config(pools: list[dict[str, Any]], routes: list[dict[str, Any]], **sections: Any) -> Config:
    return parse({"pools": pools, "routes": routes, **sections}, {})


def pool(name: str, rpm: int = 60, **fields: Any) -> dict[str, Any]:
    return {"name": name, "rpm": rpm, "keys": [f"key-{name}-0123456789abcdef"], **fields}


TIERS_POOLS = [pool("std"), pool("flex", service_tier="flex"), pool("prio", service_tier="priority")]
TIERS_ROUTES = [
    {"name": "standard", "pools": ["std"], "price": 2},
    {"name": "flex", "pools": ["flex"], "price": 1},
    {"name": "premium", "pools": ["prio"], "price": 3},
]
TIERS = config(TIERS_POOLS, TIERS_ROUTES)


def test_a_task_may_use_the_routes_its_charge_covers_and_a_higher_max_price_opens_the_dearer() -> None:
    """Charged the first route's price, a task may use it and the cheaper flex route; the
    premium route opens with a `max_price` of its price (cheaper routes still usable). With that
    `max_price` nothing dearer is left; with credits off every route costs the same."""
    sets = route_sets(TIERS, "photography", None)
    assert sets.own == ("std", "flex")
    assert [(route.name, route.price, pools) for route, pools in sets.dearer] == [
        ("premium", 3, ("std", "flex", "prio"))
    ]
    assert route_sets(TIERS, "photography", 3).own == ("std", "flex", "prio")
    assert route_sets(TIERS, "photography", 3).dearer == ()
    off = config(TIERS_POOLS, TIERS_ROUTES, credits={"enabled": False})
    assert route_sets(off, "photography", None).dearer == ()


def test_a_routes_windows_are_its_pools_and_a_linked_pool_takes_places_in_its_roots_window() -> None:
    """The snapshot's windows line up with the pools' groups; a priority pool counting against
    the standard pool of another route has the standard window (every call of the group is in
    it) at no more than its own capacity, open from when the priority pool may grant."""
    linked = config(
        [
            pool("std", rpm=600, window_seconds=1.0),
            pool("prio", rpm=120, window_seconds=1.0, counts_against="std"),
        ],
        [
            {"name": "standard", "pools": ["std"], "price": 1},
            {"name": "premium", "pools": ["prio"], "price": 3},
        ],
    )
    group = PoolWindow(10, 1.0, (NOW - 0.5,), available_from=0.0)
    assert route_windows(linked, ["std"], [group]) == (group,)
    (premium,) = route_windows(linked, ["prio"], [group], {"std": 0.0, "prio": NOW + 5}) or ()
    assert premium == PoolWindow(2, 1.0, (NOW - 0.5,), available_from=NOW + 5)
    assert route_windows(linked, ["std"], [group, group]) is None  # not this configuration's


def test_a_dearer_routes_eta_is_its_pools_alone_and_the_409_names_it() -> None:
    """One pool of one place a minute, taken a second ago, and one of ten a second: four slots
    of 1 s calls, nothing ahead. On the slow pool alone the task waits about a minute, so a
    10 s deadline is refused; with the fast pool too it starts at once, and the 409 names that
    route with the max_price that opens it."""
    slow = PoolWindow(1, 60.0, (NOW - 1.0,))
    fast = PoolWindow(10, 1.0)
    snapshot = Snapshot(
        at=NOW,
        slots=4,
        pools=(slow, fast),
        calls=(),
        needing=(),
        running=0,
        outcomes=0.0,
        times=CallTimes(1.0, (0.8, 1.0, 1.2)),
        handoff=0.0,
    )
    whole = build(snapshot, 64, random.Random(0))
    primary = route_eta(route_forecast(whole, (slow,), 64), 0, IDLE, NOW)
    both = route_eta(route_forecast(whole, (slow, fast), 64), 0, IDLE, NOW)
    assert primary.p90 is not None and primary.p90 > 50
    assert both.p90 is not None and both.p90 < 1
    ((premium, _),) = route_sets(TIERS, "photography", None).dearer
    dearest = Route("dearest", ("other",), 5, "m")
    met = alternatives([(premium, both), (dearest, Eta(40.0, 60.0))], 10.0)
    assert met == [Alternative("premium", 3, both.p90)]
    refused = unreachable(primary, 10.0, met)
    assert refused is not None and refused.extra["alternatives"] == [
        {"route": "premium", "max_price": 3, "eta_p90_seconds": both.p90}
    ]
    assert f"or allow max_price 3 for route premium, about {both.p90:g} s" in refused.detail


def test_without_a_route_that_meets_it_the_list_is_empty_and_without_routes_absent() -> None:
    """Routes configured but none in time: `alternatives` is empty and the detail names none;
    no routes: the answer has no `alternatives`."""
    late = Eta(20.0, 30.0)
    none_met = unreachable(late, 10.0, alternatives([], 10.0))
    assert none_met is not None and none_met.extra["alternatives"] == []
    assert "max_price" not in none_met.detail and "min_deadline_seconds" not in none_met.detail
    plain = unreachable(late, 10.0)
    assert plain is not None and "alternatives" not in plain.extra
    assert unreachable(Eta(1.0, 2.0), 10.0, [Alternative("premium", 3, 0.5)]) is None
