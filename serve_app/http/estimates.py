"""What answers promise about time: sustainable throughput, a refused submit's wait, a task's ETA."""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass

from actors import forecast
from actors.config import Config
from events.admission import Refusal
from events.store import QueueCounts
from serve_app.http.context import Context
from serve_app.http.pools import PoolView

# Every figure of throughput, every Retry-After of a refused submit and every ETA comes from
# the one forecast in `actors.forecast`; this module only reads the figures it needs.

# A start table is built again when the pools' views are read again (`Context.recent_pools`),
# when the running calls change by a tenth of the slots or the slot's hold by 5 %; but never
# sooner than REBUILD_SHARE times its last build took, so that tables cost at most about
# 1/REBUILD_SHARE of the replica's time whatever the configuration.
REBUILD_SHARE = 50
HOLD_CHANGE = 0.05


@dataclass(frozen=True, slots=True)
class _Built:
    """A start table and what it was built from."""

    pools: list[PoolView]
    running: int
    hold: float
    at: float
    cost: float
    table: forecast.StartTable

    def fits(self, pools: list[PoolView], running: int, hold: float, slots: int, now: float) -> bool:
        """Whether the table still answers: built from these pools' views and about these counts,
        or built too recently to be built again."""
        if now - self.at < REBUILD_SHARE * self.cost:
            return True
        return (
            pools is self.pools
            and abs(running - self.running) < max(1, slots // 10)
            and abs(hold - self.hold) <= HOLD_CHANGE * self.hold
        )


_tables: weakref.WeakKeyDictionary[Context, _Built] = weakref.WeakKeyDictionary()


def throughput(
    config: Config, stats: dict[str, float], pools: list[PoolView] | None = None
) -> tuple[float, float]:
    """(tasks per second the configuration can sustain, mean call latency used for it).

    With the pools' views, their learned rates count and parked or keyless pools do not.
    """
    rates = [p.rate for p in config.pools] if pools is None else [v.rate for v in pools if v.serving]
    return forecast.throughput(config.queue.slots, stats, config.provider.latency_seconds, rates)


def refusal_wait(config: Config, refusal: Refusal, counts: QueueCounts) -> int:
    """Seconds, 1 to 3600, until a submit refused for a full backlog ("queue_full" or
    "user_waiting") may be accepted."""
    rate, _ = throughput(config, counts.stats)
    return forecast.refusal_wait(
        refusal.reason, counts.waiting, config.queue.max_waiting, refusal.waiting, rate
    )


async def start_table(ctx: Context, counts: QueueCounts) -> forecast.StartTable:
    """The replica's start table for the queue as `counts` shows it (see REBUILD_SHARE)."""
    _, latency = throughput(ctx.config, counts.stats)
    hold = forecast.slot_hold(counts.stats, latency)
    pools = await ctx.recent_pools()
    slots = ctx.config.queue.slots
    started = time.monotonic()
    built = _tables.get(ctx)
    if built is not None and built.fits(pools, counts.running, hold, slots, started):
        return built.table
    # Positions stay below the waiting limit; beyond it the table's steady state answers.
    horizon = ctx.config.queue.max_waiting + slots
    windows = [view.eta_window() for view in pools]
    table = forecast.start_table(time.time(), slots, counts.running, hold, windows, horizon)
    _tables[ctx] = _Built(pools, counts.running, hold, started, time.monotonic() - started, table)
    return table


async def eta(ctx: Context, position: int | None, counts: QueueCounts) -> float | None:
    """Seconds until the task at `position` starts: one lookup in the replica's start table,
    which gives the forecast's figures (`forecast.eta_seconds`) for every position."""
    if position is None:
        return None
    seconds = (await start_table(ctx, counts)).eta(position, time.time())
    return round(max(0.0, seconds), 1) if math.isfinite(seconds) else None
