"""What `genqueue plan` prints: the start bands, waits and cost, and with a configuration its routes."""

from __future__ import annotations

import math
from collections import Counter

from rich.console import Console
from rich.table import Table

from actors.config import Config, ConfigError
from actors.planner import Schedule, arrivals, bands
from actors.route_plan import from_config, simulate_routes, totals
from serve_app.cli.burst import percentile
from serve_app.cli.options import fail


def band_table(schedule: Schedule, title: str, latency: float, window: float) -> Table:
    """Users grouped by the window their call starts in: who, when they start, finished by."""
    table = Table(title=title)
    for column in ("users", "start", "finished by"):
        table.add_column(column)
    for first, last, lo, hi in bands(schedule, window):
        who = f"{first}" if first == last else f"{first}-{last}"
        if hi < 0.5:
            when = "at once"
        elif hi - lo < 0.05:
            when = f"at {lo:.1f} s"
        else:
            when = f"{lo:.1f} to {hi:.1f} s"
        table.add_row(who, when, f"{hi + latency:.1f} s")
    return table


def waits_line(schedule: Schedule) -> str:
    """The makespan and the waits' p50, p90 and longest."""
    waits = schedule.waits
    return (
        f"makespan {schedule.makespan:.1f} s; wait p50 {percentile(waits, 50):.1f} s, "
        f"p90 {percentile(waits, 90):.1f} s, longest {max(waits):.1f} s"
    )


def cost_line(cost: float, price: str, bursts_per_day: float) -> str:
    """The upstream cost of one burst (`price`: how it is priced) and of a month of them."""
    return (
        f"cost ${cost:,.2f} per burst {price}; "
        f"${cost * bursts_per_day * 30:,.2f} a month at {bursts_per_day:g} burst(s) a day"
    )


def plan_routes(
    console: Console,
    config: Config,
    users: int,
    arrival: str,
    slots: int | None,
    latency: float,
    window: float,
    margin: float,
    kind: str,
    max_price: int | None,
    bursts_per_day: float,
) -> None:
    """Plan a burst of `kind` tasks on the configuration's pools and routes
    (`actors.route_plan`): the bands, waits, and per route the tasks it served and their cost."""
    used = config.queue.slots if slots is None else slots
    try:
        routes = from_config(config, kind, max_price)
        plan = simulate_routes(arrivals(users, arrival), used, latency, routes, window, margin)
    except (ValueError, ConfigError) as exc:
        fail(str(exc), 2)
    served = [i for i, start in enumerate(plan.schedule.starts) if math.isfinite(start)]
    s = plan.schedule
    schedule = Schedule(*(tuple(column[i] for i in served) for column in (s.arrivals, s.starts, s.finishes)))
    pools = sum(len(r.pools) for r in routes)
    title = (
        f"{users} {kind} users, {pools} pools in {len(routes)} route(s), {used} slots, {latency:g} s per call"
    )
    console.print(band_table(schedule, title, latency, window))
    if schedule.starts:
        console.print(waits_line(schedule))
    if len(served) < users:
        console.print(
            f"{users - len(served)} user(s) never start: every route's day limit is used "
            "(they wait for the next day)"
        )
    table = Table(title="routes, in order")
    for column in ("route", "pools", "tasks", "starts", "upstream $", "credits"):
        table.add_column(column)
    for route, total in zip(routes, totals(plan, routes), strict=True):
        limits = ", ".join(f"{p.name} ({p.rpd} a day)" if p.rpd else p.name for p in route.pools)
        starts = f"{total.first:.1f} to {total.last:.1f} s" if total.tasks else "-"
        credits = "-" if total.credits is None else f"{total.credits:,}"
        table.add_row(route.name, limits, str(total.tasks), starts, f"{total.usd:,.3f}", credits)
    console.print(table)
    cost = sum(t.usd for t in totals(plan, routes))
    calls = Counter(plan.pools)
    if any(p.rpd and calls[p.name] * bursts_per_day > p.rpd for r in routes for p in r.pools):
        # Later bursts of a day find less of the day limits left: not this burst's cost again.
        console.print(
            f"cost ${cost:,.2f} per burst at each pool's price_per_image; no monthly figure: "
            f"{bursts_per_day:g} burst(s) a day go past a pool's day limit, so a day's later "
            "bursts are served otherwise"
        )
        return
    console.print(cost_line(cost, "at each pool's price_per_image", bursts_per_day))
