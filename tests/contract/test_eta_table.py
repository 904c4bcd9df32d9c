"""A replica's ETAs on the real store: one start table per read of the pools' views, the forecast's
own figures from it at any position."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from actors.forecast import eta_seconds, slot_hold
from events.store import QueueCounts
from serve_app.http import estimates
from serve_app.http.context import POOLS_FRESH_SECONDS, Context
from tests.helpers import make_config


def test_etas_come_from_one_table_per_pools_read_and_match_the_forecast(
    store_url: str, data_dir: str
) -> None:
    """Many ETAs share the table built from one read of the pools' views, which is built again once
    the views are read again; its figures are the forecast's at positions 10 and 10,000."""
    config = make_config(store_url, data_dir, slots=4, pools=(("p1", 60, 1.0), ("p2", 30, 1.0)))
    stats = {"elapsed_sum": 20.0, "elapsed_count": 10.0, "held_sum": 25.0, "held_count": 10.0}
    counts = QueueCounts(waiting=10_001, running=4, stats=stats)

    async def main() -> None:
        ctx = Context(config)
        try:
            first = await estimates.start_table(ctx, counts)
            assert await estimates.start_table(ctx, counts) is first
            pools = await ctx.recent_pools()
            windows = [view.eta_window() for view in pools]
            hold = slot_hold(stats, 2.0)
            for position in (10, 10_000):
                want = eta_seconds(position, time.time(), 4, 4, hold, windows)
                got = await estimates.eta(ctx, position, counts)
                assert got is not None and abs(got - want) <= 0.15, (position, got, want)
            # The views are read again once older than POOLS_FRESH_SECONDS: age them past it.
            read_at, views = ctx._pools
            ctx._pools = (read_at - POOLS_FRESH_SECONDS - 1, views)
            assert await ctx.recent_pools() is not pools
            # And the table past its rebuild limit (REBUILD_SHARE times its build time).
            built = estimates._tables[ctx]
            estimates._tables[ctx] = replace(built, at=built.at - 60)
            assert await estimates.start_table(ctx, counts) is not first
        finally:
            await ctx.store.close()

    asyncio.run(main())
