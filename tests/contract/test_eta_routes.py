"""A replica's ETAs under fallback routes, on the real store: the primary route's pools only while
it serves; the fallback's once a `key.parked` event parks the primary for the day."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from actors.config import Config, RouteConfig
from actors.forecast import PoolWindow, eta_seconds, window_capacity
from events.key_events import KeyParked
from events.store import QueueCounts
from serve_app.http import estimates
from serve_app.http.context import Context
from tests.helpers import append_to, make_config

POSITION = 10_000


def forecast_of(config: Config, names: tuple[str, ...]) -> float:
    """The forecast's ETA of POSITION over the pools `names` alone (an idle queue)."""
    margin = config.keypool.margin_seconds
    windows = [
        PoolWindow(window_capacity(p.rate, p.window_seconds), p.window_seconds + margin)
        for p in config.pools
        if p.name in names
    ]
    return eta_seconds(POSITION, time.time(), 4, 0, estimates.prior(config), windows)


def replica_eta(config: Config) -> float:
    """The ETA a fresh replica gives POSITION."""
    counts = QueueCounts(waiting=POSITION + 1, running=0, stats={})

    async def main() -> float:
        ctx = Context(config)
        try:
            got = await estimates.eta(ctx, POSITION, counts)
            assert got is not None
            return got
        finally:
            await ctx.store.close()

    return asyncio.run(main())


def test_the_eta_follows_the_route_that_serves(store_url: str, data_dir: str) -> None:
    """p1 (10 places a second) is the primary, p2 (20) the fallback: the ETA is p1's alone,
    about three times both pools'; p1 parked for the day, it is p2's alone."""
    base = make_config(store_url, data_dir, slots=4, pools=(("p1", 600, 1.0), ("p2", 1200, 1.0)))
    routes = (RouteConfig("primary", ("p1",)), RouteConfig("fallback", ("p2",)))
    config = replace(base, routes=routes)
    primary = replica_eta(config)
    assert abs(primary - forecast_of(config, ("p1",))) <= 0.15
    assert primary > 2.5 * forecast_of(config, ("p1", "p2"))
    key_id = config.pools[0].key_ids[0]
    until = time.time() + 3600
    parked = KeyParked(pool="p1", key_id=key_id, until=until, quota_id="PerDay", reason="day", at=time.time())
    append_to(config, [parked])
    fallback = replica_eta(config)
    assert abs(fallback - forecast_of(config, ("p2",))) <= 0.15
