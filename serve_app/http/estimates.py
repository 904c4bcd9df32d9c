"""What answers promise about time: sustainable throughput, a refused submit's wait, a task's ETA."""

from __future__ import annotations

import math
import time

from actors import forecast
from actors.config import Config
from events.admission import Refusal
from events.store import QueueCounts
from serve_app.http.context import Context
from serve_app.http.pools import PoolView

# Every figure of throughput, every Retry-After of a refused submit and every ETA comes from
# the one forecast in `actors.forecast`; this module only reads the figures it needs.


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


async def eta(ctx: Context, position: int | None, counts: QueueCounts) -> float | None:
    """Seconds until the task at `position` starts, simulated from slots, latency and windows."""
    if position is None:
        return None
    _, latency = throughput(ctx.config, counts.stats)
    hold = forecast.slot_hold(counts.stats, latency)
    windows = [view.eta_window() for view in await ctx.recent_pools()]
    slots = ctx.config.queue.slots
    seconds = forecast.eta_seconds(position, time.time(), slots, counts.running, hold, windows)
    return round(max(0.0, seconds), 1) if math.isfinite(seconds) else None
