"""A submit's deadline: `deadline_seconds` in the body or a `Cancel-After` header (Replicate's
form), and the 409 `deadline-unreachable` for a task whose ETA already misses it, decided before
anything is charged or written.

The ETA is the one the 202 answer carries (`estimates.eta_range_of`), taken at the place the task
would take (`places`): a new user's task goes ahead of a heavy user's backlog, so the queue's
length alone would refuse tasks that would start in time.

With `[[routes]]`, a task takes its token only from the pools of the routes its charge covers:
the first that serves, or, under a deadline, any that can start it in time
(`actors.keypool.routes`); a dearer route opens to it with a higher `max_price`. The
replica's forecast is one table for every kind (`estimates.snapshot`), so the ETA on a set of
routes is built again from that forecast's snapshot (the same slots, calls in flight, call
times and tasks ahead) with only those routes' pool windows, each open from when its pools may
grant (`route_windows`, `route_forecast`): once per set of pools and forecast, and only for a
deadline checked under routes. Every task ahead is counted as taking a place in those pools
too, as the one table counts it in its pools: when tasks ahead ride other routes, a route's
ETA is later than it will be, so a route the 409 names is one that would be met.
"""

from __future__ import annotations

import math
import random
import re
import time
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import Header

from actors import eta_range, linked_pools
from actors.config import Config, Route, chain, charged_price, counted_against
from actors.forecast import PoolWindow, window_capacity
from events.lane_positions import Lanes, tasks_before
from events.places import Places, places
from events.store import QueueCounts
from serve_app.http.context import Context
from serve_app.http.estimates import HORIZON, Eta, current, eta_range_of
from serve_app.http.problems import BadRequest, DeadlineUnreachable, Unprocessable

CANCEL_AFTER = "Cancel-After"
# The longest deadline a submit may ask for (a day), and the longest Cancel-After value read.
MAX_DEADLINE_SECONDS = 86_400
MAX_CANCEL_AFTER_CHARS = 64
ACCEPT_LATE, REFUSE_LATE = "accept", "refuse"

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN = re.compile(_NUMBER)
# Each unit at most once, from the largest down: `1h30m`, `90s`, `1m500ms`, `0.5h`.
_DURATION = re.compile(
    rf"(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s)?(?:(?P<ms>{_NUMBER})ms)?"
)
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

CancelAfterHeader = Annotated[
    str | None,
    Header(
        alias=CANCEL_AFTER,
        description="The task's deadline as a duration from now, as Replicate takes it: `15s`, `5m`, "
        "`1h30m`, `500ms`, or plain seconds (`15`); more than 0 and at most 24 h. The same as the "
        "body's `deadline_seconds` (both given, they must agree).",
    ),
]


def parse_duration(text: str) -> float:
    """The seconds a Cancel-After value stands for: a number of seconds (`15`, `2.5`) or a
    duration of hours, minutes, seconds and milliseconds, each unit at most once and the largest
    first (`1h30m`, `5m`, `15s`, `500ms`); more than 0 and at most MAX_DEADLINE_SECONDS. A
    ValueError saying what is wrong otherwise."""
    value = text.strip()
    if not value:
        raise ValueError("empty: give a duration such as 15s, 5m or 1h30m")
    if len(value) > MAX_CANCEL_AFTER_CHARS:
        raise ValueError(f"longer than {MAX_CANCEL_AFTER_CHARS} characters")
    if _PLAIN.fullmatch(value):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value)
        parts = {unit: amount for unit, amount in match.groupdict().items() if amount} if match else {}
        if not parts:
            raise ValueError(
                f"{value!r} is not a duration: use seconds (15) or h, m, s and ms, largest first "
                "(15s, 5m, 1h30m, 500ms)"
            )
        seconds = sum(float(amount) * _UNITS[unit] for unit, amount in parts.items())
    if not 0 < seconds <= MAX_DEADLINE_SECONDS:
        raise ValueError(f"{value!r} is {seconds:g} s: a deadline is more than 0 and at most 24 h (86400 s)")
    return seconds


def deadline_seconds(given: float | None, header: str | None) -> float | None:
    """The deadline a submit asks for, in seconds from now: the body's `deadline_seconds` or the
    Cancel-After `header` (None: no deadline). A 422 naming the header when it does not parse,
    a 400 when both are given and differ."""
    from_header = None
    if header is not None:
        try:
            from_header = parse_duration(header)
        except ValueError as exc:
            raise Unprocessable(
                f"the {CANCEL_AFTER} header: {exc}", errors=[{"field": CANCEL_AFTER, "message": str(exc)}]
            ) from None
    if given is not None and from_header is not None and not math.isclose(given, from_header, abs_tol=1e-6):
        raise BadRequest(
            f"deadline_seconds ({given:g}) and the {CANCEL_AFTER} header ({from_header:g} s) differ",
            errors=[{"field": "deadline_seconds", "message": f"differs from the {CANCEL_AFTER} header"}],
        )
    return given if given is not None else from_header


@dataclass(frozen=True, slots=True)
class Alternative:
    """A route of the task's chain that its charge does not cover and whose ETA's p90 meets the
    deadline: submitted with `max_price` (the route's price), the task may take it."""

    route: str
    max_price: int
    eta_p90: float

    def as_json(self) -> dict[str, Any]:
        """As the 409 carries it."""
        return {"route": self.route, "max_price": self.max_price, "eta_p90_seconds": self.eta_p90}


@dataclass(frozen=True, slots=True)
class RouteSets:
    """The pools a task may take its token from as charged, and each route of its chain that
    costs more, cheapest first, with the pools a `max_price` of its price opens."""

    own: tuple[str, ...]
    dearer: tuple[tuple[Route, tuple[str, ...]], ...] = ()


def route_sets(config: Config, kind: str, max_price: int | None) -> RouteSets:
    """The pools a task of `kind` submitted with `max_price` may use, and what a higher
    `max_price` would open (`actors.config.routes`: a task may use the routes costing no more
    than it was charged; with a deadline, any of them that can start it in time)."""
    routes = chain(config, kind)

    def within(price: int) -> tuple[str, ...]:
        return tuple(pool for route in routes if route.price <= price for pool in route.pools)

    charged = charged_price(config, kind, max_price)
    own = within(charged)
    dearer = sorted((r for r in routes if r.price > charged), key=lambda r: r.price)
    return RouteSets(own, tuple((r, within(r.price)) for r in dearer))


def route_windows(
    config: Config,
    pools: Collection[str],
    windows: Sequence[PoolWindow],
    available: Mapping[str, float] | None = None,
) -> tuple[PoolWindow, ...] | None:
    """The windows of a forecast's snapshot (one per group of linked pools, in the order of their
    roots, `linked_pools.shared_windows`) that `pools` take places in; None when they do not line
    up with the configured pools. A group whose root is not among `pools` keeps the root's window
    (every call of the group takes a place in it) at no more than the configured capacity of
    its members among `pools`. `available`: when each pool may grant (its view's
    `available_from`), which decides the window's own (the snapshot counts only the routes
    that serve now, `actors.serving_routes`, and closes the others' windows)."""
    links = {p.name: counted_against(config.pools, p.name) for p in config.pools}
    grouped = linked_pools.groups([p.name for p in config.pools], links)
    if len(grouped) != len(windows):
        return None
    by_name = {p.name: p for p in config.pools}
    out = []
    for (top, members), window in zip(grouped.items(), windows, strict=True):
        mine = [m for m in members if m in pools]
        if not mine:
            continue
        if top not in mine:
            own = sum(window_capacity(by_name[m].rate, by_name[m].window_seconds) for m in mine)
            window = replace(window, capacity=min(window.capacity, own))
        if available is not None:
            window = replace(window, available_from=min(available.get(m, math.inf) for m in mine))
        out.append(window)
    return tuple(out)


def route_forecast(
    built: eta_range.Forecast, windows: tuple[PoolWindow, ...], horizon: int
) -> eta_range.Forecast:
    """`built`'s forecast had only `windows` served: its snapshot with those pool windows, built
    as the replica builds its own (`estimates`)."""
    return eta_range.build(replace(built.snapshot, pools=windows), horizon, random.Random(0))


def route_eta(forecast: eta_range.Forecast, position: int, counts: QueueCounts, now: float) -> Eta:
    """The ETA range, rounded as the 202 answer's, of the task `position` waiting tasks are
    ahead of, by `forecast` (every task ahead counted as needing a place in its pools)."""
    answer = forecast.range(forecast.ahead(position, counts.running, counts.stats), now)
    return Eta() if answer is None else Eta(round(answer[0], 1), round(answer[1], 1))


def alternatives(etas: Sequence[tuple[Route, Eta]], seconds: float) -> list[Alternative]:
    """The routes (each with its ETA on the pools its price opens, cheapest first) whose p90
    meets a deadline `seconds` from now."""
    return [
        Alternative(route.name, route.price, eta.p90)
        for route, eta in etas
        if eta.p90 is not None and eta.p90 <= seconds
    ]


def misses(eta: Eta, seconds: float) -> bool:
    """Whether the ETA's p90 is later than a deadline `seconds` from now (unknown: no)."""
    return eta.p90 is not None and eta.p50 is not None and eta.p90 > seconds


def unreachable(
    eta: Eta, seconds: float, other_routes: Sequence[Alternative] | None = None
) -> DeadlineUnreachable | None:
    """The 409 for a deadline `seconds` from now that the ETA's p90 misses; None when it meets it
    or is unknown (no pool serves the kind now: it may come back in time). With `[[routes]]`,
    `other_routes` are the dearer routes that would meet it (the detail names the cheapest);
    None leaves them out of the answer."""
    if eta.p90 is None or eta.p50 is None or not misses(eta, seconds):
        return None
    need = max(1, math.ceil(eta.p90))
    longest = (
        f"; that is longer than the longest deadline ({MAX_DEADLINE_SECONDS} s)"
        if need > MAX_DEADLINE_SECONDS
        else ""
    )
    route = ""
    if other_routes:
        best = other_routes[0]
        route = f"; or allow max_price {best.max_price} for route {best.route}, about {best.eta_p90:g} s"
    return DeadlineUnreachable(
        f"the task would start in about {eta.p50:g}-{eta.p90:g} s (p50-p90), after its deadline of "
        f"{seconds:g} s; nothing was charged. A deadline of {need} s or more would be met{longest}"
        f'{route}; or send if_late: "accept" to queue it anyway',
        eta=eta.p50,
        eta_p90=eta.p90,
        deadline=seconds,
        alternatives=None if other_routes is None else [a.as_json() for a in other_routes],
    )


# The forecasts on sets of routes' pools, built from a replica's current forecast (by pool set).
_routed: weakref.WeakKeyDictionary[
    Context, tuple[eta_range.Forecast, dict[tuple[str, ...], eta_range.Forecast | None]]
] = weakref.WeakKeyDictionary()


async def pools_eta(
    c: Context, position: int, counts: QueueCounts, pools: tuple[str, ...] | None, lane: str = ""
) -> Eta:
    """The ETA range of the task of `lane` at `position` if served by `pools` only (None: the
    202 answer's ETA). Each set's forecast is built once per forecast of the replica."""
    if pools is None:
        return await eta_range_of(c, position, counts, lane)
    built = await current(c, counts)
    of, by_pools = _routed.get(c, (None, {}))
    if of is not built:
        by_pools = {}
        _routed[c] = (built, by_pools)
    if pools not in by_pools:
        available = {view.name: view.available_from for view in await c.recent_pools()}
        windows = route_windows(c.config, pools, built.snapshot.pools, available)
        horizon = HORIZON + c.config.queue.slots
        by_pools[pools] = None if windows is None else route_forecast(built, windows, horizon)
    forecast = by_pools[pools]
    if forecast is None:
        return await eta_range_of(c, position, counts, lane)
    return route_eta(forecast, position, counts, time.time())


async def late(
    c: Context,
    submits: Sequence[tuple[str, str, float | None, str]],
    lanes: Sequence[str] = (),
    prices: Sequence[tuple[str, int | None]] = (),
) -> list[DeadlineUnreachable | None]:
    """For submits (user id, idempotency key, deadline seconds, if_late) in request order, the
    409 of each whose deadline its ETA would miss at the place it would take, under
    `if_late: "refuse"`; None for the others. The queue is read only when one needs checking.

    A submit whose key names a task already is not checked (its answer is that task), and one
    refused here takes no place from those after it in the request. With `[[lanes]]`, `lanes`
    names each submit's lane and its place counts the tasks that would start before it
    (`events.lane_positions`). With `[[routes]]`, `prices` gives each submit's kind and
    `max_price`: its ETA is on the routes its charge covers (`route_sets`), and its 409 lists
    the dearer routes that would meet the deadline.
    """
    out: list[DeadlineUnreachable | None] = [None] * len(submits)
    if not any(seconds is not None and if_late == REFUSE_LATE for _, _, seconds, if_late in submits):
        return out
    among = c.lanes if lanes else None
    lane_of = list(lanes) if among is not None else [""] * len(submits)
    seen = await places(c.store, [(user, key) for user, key, _, _ in submits], among, lane_of)
    rounds = dict(seen.rounds)
    taken: list[tuple[int, str]] = []  # (round, lane) of the request's earlier submits that take a place
    for i, (user, _, seconds, if_late) in enumerate(submits):
        if i in seen.replays:
            continue
        round_ = rounds[user]
        if seconds is not None and if_late == REFUSE_LATE:
            position = _place(seen, round_, lane_of[i], taken, among)
            sets = route_sets(c.config, *prices[i]) if prices and c.config.routes else None
            eta = await pools_eta(c, position, seen.counts, sets.own if sets else None, lane_of[i])
            if misses(eta, seconds):
                others = None
                if sets is not None:
                    etas = [(r, await pools_eta(c, position, seen.counts, p)) for r, p in sets.dearer]
                    others = alternatives(etas, seconds)
                out[i] = unreachable(eta, seconds, others)
                continue
        taken.append((round_, lane_of[i]))
        rounds[user] = round_ + 1
    return out


def _place(
    seen: Places, round_: int, lane: str, taken: Sequence[tuple[int, str]], lanes: Lanes | None
) -> int:
    """How many waiting tasks would start before a submit of `round_` in `lane`, after the
    request's earlier submits `taken` (round, lane): the waiting tasks in its round and those
    before it, or with lanes, the tasks before it among the lanes."""
    if lanes is None:
        return seen.ahead[round_] + sum(1 for r, _ in taken if r <= round_)
    rank = seen.lane_ahead[(lane, round_)] + sum(1 for r, m in taken if r <= round_ and m == lane)
    waiting = dict(seen.by_lane)
    for _, m in taken:
        waiting[m] = waiting.get(m, 0) + 1
    return tasks_before(lane, rank, waiting, lanes)
