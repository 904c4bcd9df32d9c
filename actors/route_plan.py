"""Capacity planning with fallback routes: the first route serves until its day quota is used, then the next.

The schedule is the planner's (`actors.planner.simulate`): users in arrival order, each needing
a slot, held for the call, and a place in a pool's window, reused one window (plus the key
pool's margin) after the call that took it. With routes, a task takes its place from the
first route that still serves, as the key pool gives tokens (`actors.keypool.routes`): a
route's spent windows are waited for, not left. A pool stops serving once its calls reach its
day limit (`rpd`, or what its spend cap pays for: the key pool parks it with that call); a
route serves while one of its pools does, and the next route takes over from the start of the
call that used the last of it. A pool that counts against another takes its places in that
one's window (`actors.linked_pools`). The day starts with no call made and does not end.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from actors.config import Config, ConfigError, chain, lowest_price
from actors.forecast import window_capacity
from actors.linked_pools import chains, root
from actors.planner import WINDOW_SECONDS, PoolPlan, Schedule
from actors.serving_routes import usable_routes


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """One route: its name, its pools in order, and the credits a task served on it costs
    (None: unknown)."""

    name: str
    pools: tuple[PoolPlan, ...]
    price: int | None = None


@dataclass(frozen=True, slots=True)
class RouteSchedule:
    """The schedule, and per user (in arrival order) the route and the pool that served it
    ("" for a user no pool ever serves: every day limit is used)."""

    schedule: Schedule
    routes: tuple[str, ...]
    pools: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RouteTotal:
    """What one route served: tasks, the first and last start, USD (its pools' prices) and
    credits (None: its price is unknown)."""

    name: str
    tasks: int
    first: float
    last: float
    usd: float
    credits: int | None


def simulate_routes(
    arrival_times: Sequence[float],
    slots: int,
    latency: float,
    routes: Sequence[RoutePlan],
    window: float = WINDOW_SECONDS,
    margin: float = 0.0,
) -> RouteSchedule:
    """Start, finish, route and pool of each user, served in arrival order (see the module).

    `window`: the window of a pool that gives none of its own. A user no route can serve any
    more starts at inf.
    """
    pools = {p.name: p for route in routes for p in route.pools}
    if slots < 1 or latency < 0 or not pools:
        raise ValueError("slots must be >= 1, latency >= 0 and at least one pool given")
    links = chains({p.name: p.counts_against for p in pools.values()})
    roots = {name: root(name, links) for name in pools}
    seconds = {name: p.window or window for name, p in pools.items()}
    # Each window's places, as the times they free; reused `window + margin` after a start.
    places = {top: [0.0] * window_capacity(pools[top].rpm, seconds[top]) for top in set(roots.values())}
    used = dict.fromkeys(pools, 0)
    stopped: dict[str, float] = {}  # a pool that used its day limit -> the start of its last call
    slot_free = [0.0] * slots
    ordered = sorted(arrival_times)
    starts: list[float] = []
    served: list[str] = []
    by: list[str] = []
    for arrived in ordered:
        ready = max(arrived, heapq.heappop(slot_free))
        index = next((i for i, r in enumerate(routes) if any(p.name not in stopped for p in r.pools)), None)
        if index is None:
            starts.append(math.inf)
            served.append("")
            by.append("")
            heapq.heappush(slot_free, math.inf)
            continue
        # The routes before it stopped serving when the last of their pools did.
        since = max((stopped[p.name] for r in routes[:index] for p in r.pools), default=0.0)
        open_pools = [p for p in routes[index].pools if p.name not in stopped]
        pool = min(open_pools, key=lambda p: places[roots[p.name]][0])
        top = roots[pool.name]
        start = max(ready, places[top][0], since)
        heapq.heapreplace(places[top], start + seconds[top] + margin)
        heapq.heappush(slot_free, start + latency)
        used[pool.name] += 1
        if pool.rpd and used[pool.name] >= pool.rpd:
            stopped[pool.name] = start
        starts.append(start)
        served.append(routes[index].name)
        by.append(pool.name)
    schedule = Schedule(tuple(ordered), tuple(starts), tuple(s + latency for s in starts))
    return RouteSchedule(schedule, tuple(served), tuple(by))


def totals(plan: RouteSchedule, routes: Sequence[RoutePlan]) -> list[RouteTotal]:
    """Per route, in order: the tasks it served, their first and last start, what they cost
    upstream (each pool's price a call) and in credits."""
    price = {p.name: p.price_per_image for r in routes for p in r.pools}
    rows = list(zip(plan.schedule.starts, plan.routes, plan.pools, strict=True))
    out = []
    for route in routes:
        mine = [(start, pool) for start, name, pool in rows if name == route.name]
        starts = [s for s, _ in mine]
        out.append(
            RouteTotal(
                route.name,
                len(mine),
                min(starts, default=0.0),
                max(starts, default=0.0),
                sum(price[pool] for _, pool in mine),
                None if route.price is None else route.price * len(mine),
            )
        )
    return out


def from_config(config: Config, kind: str, max_price: int | None = None) -> tuple[RoutePlan, ...]:
    """The routes a task of `kind` may use (charged its price, or up to `max_price`), in order,
    with their pools as the configuration gives them (rate, window, day limit, price); without
    `[[routes]]`, one route of every pool. ConfigError when `max_price` is below the first
    route's price."""
    if max_price is not None and max_price < lowest_price(config, kind):
        raise ConfigError(
            f"max_price {max_price} is below the first route's price ({lowest_price(config, kind)})"
        )
    by_name = {p.name: p for p in config.pools}
    routes = {r.pools: r for r in chain(config, kind)}  # a pool is in one route only
    out = []
    for group in usable_routes(config, kind, max_price):
        route = routes[group]
        pools = tuple(
            PoolPlan(
                p.name,
                p.rate,
                p.counts_against if p.counts_against in by_name else "",
                p.day_limit,
                p.price_per_image,
                p.window_seconds,
            )
            for p in (by_name[name] for name in group)
        )
        out.append(RoutePlan(route.name, pools, route.price if config.credits.enabled else None))
    return tuple(out)
