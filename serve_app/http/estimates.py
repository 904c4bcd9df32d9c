"""What answers promise about time: sustainable throughput, a refused submit's wait, a task's ETA range."""

from __future__ import annotations

import asyncio
import math
import random
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from actors import eta_range, forecast, linked_pools
from actors.config import Config, counted_against
from actors.serving_routes import serving_pools
from events.admission import Refusal
from events.catalogue import RUNNING
from events.eta_reads import QueueReads, Recent, read_queue, recent_events
from events.public_view import GRANTED, call_in_flight
from events.store import QueueCounts
from serve_app.http.context import Context
from serve_app.http.pools import PoolView, grant_reads, pool_views

# Every figure of throughput, every Retry-After of a refused submit and every ETA comes from
# the one forecast in `actors.forecast` (the ETA's range from `actors.eta_range`); this module
# only reads the figures it needs.

# A replica reads the queue for its ETAs again when the counters show that it moved (a dispatch,
# a grant, an outcome) and the last read is MIN_AGE old, or when that is MAX_AGE old; but never
# sooner than REBUILD_SHARE times the CPU time the last forecast took to build, so that forecasts
# cost at most about 1/REBUILD_SHARE of the replica's CPU whatever the configuration. Between
# reads, the counters that come with each position square it with the read (`Forecast.ahead`).
MIN_AGE = 0.05
MAX_AGE = 1.0
REBUILD_SHARE = 50
# The pace: call times and grants among the newest RECENT_EVENTS events, read every RECENT_EVERY s.
RECENT_EVENTS = 500
RECENT_EVERY = 2.0
# Positions a forecast covers at least.
HORIZON = 256


@dataclass(slots=True)
class _Cache:
    """A replica's forecast, what it was read from, and the read under way."""

    forecast: eta_range.Forecast | None = None
    key: tuple[float, ...] = ()
    read_at: float = -math.inf
    built_at: float = -math.inf
    cost: float = 0.0
    reading: asyncio.Future[eta_range.Forecast] | None = None
    recent: Recent = field(default_factory=lambda: Recent([], [], {}))
    recent_at: float = -math.inf


_caches: weakref.WeakKeyDictionary[Context, _Cache] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Eta:
    """A task's ETA range: p50 and p90 seconds until its upstream call starts (None: unknown)."""

    p50: float | None = None
    p90: float | None = None

    def fields(self) -> dict[str, float | None]:
        """As the task view and the submit's answer carry it."""
        return {"eta_seconds": self.p50, "eta_p90_seconds": self.p90}


def prior(config: Config) -> float:
    """The call time assumed until one is measured (`forecast.prior_latency`)."""
    p = config.provider
    return forecast.prior_latency(p.name, p.latency_seconds, p.timeout_seconds, p.expected_call_seconds)


def throughput(
    config: Config, stats: dict[str, float], pools: list[PoolView] | None = None
) -> tuple[float, float]:
    """(tasks per second the configuration can sustain, mean call latency used for it).

    With the pools' views, their learned rates count and parked or keyless pools do not. Pools
    that count against another add nothing to its rate (`linked_pools.shared_rates`). With
    `[[routes]]`, only the pools of the routes that serve now count
    (`actors.serving_routes`; without views, each kind's first route).
    """
    links = {p.name: counted_against(config.pools, p.name) for p in config.pools}
    if pools is None:
        rates = {p.name: float(p.rate) for p in config.pools}
        serving = set(rates)
        routed = serving_pools(config)
    else:
        rates = {v.name: float(v.rate) for v in pools}
        serving = {v.name for v in pools if v.serving}
        at = pools[0].status.now if pools else 0.0
        routed = serving_pools(config, {v.name: v.status for v in pools}, at)
    if routed is not None:
        serving &= routed
    shared = linked_pools.shared_rates(rates, links, serving)
    return forecast.throughput(config.queue.slots, stats, prior(config), shared)


def refusal_wait(config: Config, refusal: Refusal, counts: QueueCounts) -> int:
    """Seconds, 1 to 3600, until a submit refused for a full backlog ("queue_full" or
    "user_waiting") may be accepted."""
    rate, _ = throughput(config, counts.stats)
    return forecast.refusal_wait(
        refusal.reason, counts.waiting, config.queue.max_waiting, refusal.waiting, rate
    )


def _key(running: int, stats: Mapping[str, float]) -> tuple[float, ...]:
    """What changes with every dispatch, grant and outcome: the running count, the outcomes and
    the grants counted so far."""
    grants = sum(v for k, v in stats.items() if k.startswith("calls:"))
    return (running, eta_range.outcomes(stats), grants)


def snapshot(config: Config, reads: QueueReads, recent: Recent, at: float) -> eta_range.Snapshot:
    """The forecast's snapshot of what one read of the queue saw at `at`.

    A slot holder has its token when its current attempt is among a pool's grants, or when that
    attempt's call started before the read (a call older than its pool's window); its call
    starts at its `started_at`, else at its grant. The others wait for a token, in the order
    they were dispatched. Pools that count against another are one window with it
    (`linked_pools.shared_windows`): their calls take its places, and they add none. With
    `[[routes]]`, a pool outside the routes that serve now (`actors.serving_routes`: each
    kind's first route with a pool neither parked nor keyless, one table for every kind) gives
    no places: a fallback counts only once the route before it is parked or out of keys.
    """
    views = pool_views(config, {p: [t for _, t in g] for p, g in reads.grants.items()}, reads.states, at)
    granted = {member: t for grants in reads.grants.values() for member, t in grants}
    calls, needing, hand_ins, ran = [], [], [], 0.0
    for h in reads.holders:
        dispatched, started = h.time("dispatched_at"), h.time("started_at")
        began = started if 0 < dispatched <= started < at else 0.0
        if h.member in granted or began:
            calls.append(began or granted[h.member])
            if began:
                ran = max(ran, at - began)
                hand_ins.append(began - dispatched)
        else:
            needing.append((dispatched, h.task_id, h.fields.get("lane") or ""))
    p = config.provider
    spread = eta_range.prior_times(p.name, prior(config), p.latency_jitter, p.timeout_seconds)
    times = eta_range.call_times(reads.stats, recent.call_times, spread, ran)
    links = {view.name: view.counts_against for view in views}
    routed = serving_pools(config, {view.name: view.status for view in views}, at)
    windows = {}
    for view in views:
        window = view.eta_window()
        late = eta_range.reuse_delay(_reuses(view, views, recent), window.window)
        windows[view.name] = replace(window, window=window.window + late)
        if routed is not None and view.name not in routed:
            windows[view.name] = replace(window, available_from=math.inf)
    return eta_range.Snapshot(
        at=at,
        slots=config.queue.slots,
        pools=tuple(linked_pools.shared_windows(windows, links)),
        calls=tuple(calls),
        needing=tuple(task_id for _, task_id, _ in sorted(needing)),
        running=len(reads.holders),
        outcomes=eta_range.outcomes(reads.stats),
        times=times,
        handoff=eta_range.handoff(recent.held_beyond, hand_ins),
        needing_lanes=tuple(lane for _, _, lane in sorted(needing)) if config.lanes else (),
    )


def _reuses(view: PoolView, views: list[PoolView], recent: Recent) -> list[tuple[float, int]]:
    """The recent grants that took places in `view`'s window, oldest first, each with the
    capacity it was made at: its own, and, when pools count against it, theirs too (at its
    capacity now)."""
    own = recent.grants.get(view.name, [])
    members = [v.name for v in views if view.name in v.counts_against]
    if not members:
        return own
    times = [at for name in (view.name, *members) for at, _ in recent.grants.get(name, [])]
    return [(at, view.capacity) for at in sorted(times)]


async def _read(ctx: Context, cache: _Cache) -> eta_range.Forecast:
    """Read the queue, build its forecast and keep it."""
    config = ctx.config
    at = time.time()
    reads = await read_queue(ctx.store, *grant_reads(config, at))
    if time.monotonic() - cache.recent_at >= RECENT_EVERY:
        cache.recent = await recent_events(ctx.store, RECENT_EVENTS)
        cache.recent_at = time.monotonic()
    # From here on nothing awaits: the thread's CPU time is this forecast's.
    started = time.thread_time()
    # Positions up to twice the queue's length (beyond: the tables' steady state answers), but
    # at most the waiting limit.
    slots = config.queue.slots
    horizon = min(config.queue.max_waiting, max(HORIZON, 2 * (reads.waiting + len(reads.holders)))) + slots
    built = eta_range.build(snapshot(config, reads, cache.recent, at), horizon, random.Random(0))
    cache.cost = time.thread_time() - started
    cache.forecast, cache.key = built, _key(len(reads.holders), reads.stats)
    cache.built_at = time.monotonic()
    return built


async def current(ctx: Context, counts: QueueCounts) -> eta_range.Forecast:
    """The replica's forecast for the queue as `counts` shows it (see MIN_AGE and MAX_AGE).

    A read already under way serves every caller; one that comes while a forecast stands is
    answered from it, squared by the counts, without waiting for the new read.
    """
    cache = _caches.setdefault(ctx, _Cache())
    now = time.monotonic()
    age = now - cache.read_at
    moved = _key(counts.running, counts.stats) != cache.key
    due = age > MAX_AGE or (moved and age > MIN_AGE)
    idle = cache.reading is None or cache.reading.done()
    if due and idle and now - cache.built_at >= REBUILD_SHARE * cache.cost:
        cache.read_at = now
        cache.reading = asyncio.ensure_future(_read(ctx, cache))
        # A read that fails while a forecast stands is tried again when next due.
        cache.reading.add_done_callback(_retrieved)
    if cache.forecast is not None:
        return cache.forecast
    if cache.reading is None or cache.reading.done():
        cache.read_at = now
        cache.reading = asyncio.ensure_future(_read(ctx, cache))
    # Shielded: a caller that goes away does not cancel the read the others wait on.
    return await asyncio.shield(cache.reading)


def _retrieved(read: asyncio.Future[eta_range.Forecast]) -> None:
    """Mark a read's failure as seen: the callers awaiting it get it, the others need not."""
    if not read.cancelled():
        read.exception()


def _rounded(answer: tuple[float, float] | None) -> Eta:
    if answer is None:
        return Eta()
    return Eta(round(answer[0], 1), round(answer[1], 1))


async def eta_range_of(
    ctx: Context, position: int | None, counts: QueueCounts, lane: str | None = None
) -> Eta:
    """The ETA range of the task that `position` waiting tasks are ahead of (None: not waiting);
    with `[[lanes]]`, of a task of `lane`: the slot holders waiting for a token count by the
    lanes' shares (`eta_range.needing_before`), and the other lanes' reserves are slots and
    places it cannot use: the tasks ahead of it take that much longer (`lane_ahead`)."""
    if position is None:
        return Eta()
    built = await current(ctx, counts)
    ahead = built.ahead(position, counts.running, counts.stats, lane, ctx.lane_weights)
    if lane is not None and ctx.config.lanes:
        ahead = lane_ahead(ahead, sum(x.reserved for x in ctx.config.lanes if x.name != lane))
    return _rounded(built.range(ahead, time.time()))


def lane_ahead(ahead: int, kept: float) -> int:
    """The tasks ahead of a task whose lane may use only 1 - `kept` of the slots and of each
    window (the other lanes' reserves), counted as places of the whole: each of its starts
    takes 1 / (1 - kept) of them."""
    return math.ceil(ahead / (1.0 - kept) - 1e-9) if kept else ahead


async def task_eta(
    ctx: Context, task_id: str, view: Mapping[str, str], position: int | None, counts: QueueCounts
) -> Eta:
    """A queued task's ETA range: by its place while it waits for its turn; once dispatched, by
    its turn among the slot holders waiting for a token; 0 once it has its token."""
    if position is not None:
        return await eta_range_of(ctx, position, counts, view.get("lane", ""))
    if view.get("status") != RUNNING or call_in_flight(view):
        return Eta()
    if view.get("call") == GRANTED and view.get("call_attempt") == view.get("attempts", "0"):
        return Eta(0.0, round(eta_range.START_JITTER, 1))
    built = await current(ctx, counts)
    ahead = built.dispatched_ahead(task_id, counts.running, counts.stats, ctx.lane_weights)
    return _rounded(built.range(ahead, time.time()))


async def eta(ctx: Context, position: int | None, counts: QueueCounts) -> float | None:
    """Seconds until the call of the task at `position` starts: the p50 of its ETA range."""
    return (await eta_range_of(ctx, position, counts)).p50
