"""A replica's ETAs on the real store: one forecast per read of the queue, read again once the
counters move; slot holders without a token count ahead; its figures are the forecast's own."""

from __future__ import annotations

import asyncio
import time

from actors.forecast import PoolWindow, eta_seconds, window_capacity
from events.catalogue import TaskDispatched
from events.key_events import KeyTokenGranted
from events.store import QueueCounts
from serve_app.http import estimates
from serve_app.http.context import Context
from tests.helpers import append_to, make_config, submitted


def test_etas_come_from_one_forecast_per_read_and_match_the_forecast(store_url: str, data_dir: str) -> None:
    """Many ETAs share one read's forecast, read again once the counters moved and it aged; on an
    empty queue its p50 is the forecast's at positions 10 and 10,000."""
    config = make_config(store_url, data_dir, slots=4, pools=(("p1", 60, 1.0), ("p2", 30, 1.0)))
    counts = QueueCounts(waiting=10_001, running=0, stats={})

    async def main() -> None:
        ctx = Context(config)
        try:
            first = await estimates.current(ctx, counts)
            assert await estimates.current(ctx, counts) is first
            margin = config.keypool.margin_seconds
            windows = [
                PoolWindow(window_capacity(p.rate, p.window_seconds), 1.0 + margin) for p in config.pools
            ]
            for position in (10, 10_000):
                want = eta_seconds(position, time.time(), 4, 0, estimates.prior(config), windows)
                got = await estimates.eta(ctx, position, counts)
                assert got is not None and abs(got - want) <= 0.15, (position, got, want)
            # Counters that moved: a new read once the forecast is MIN_AGE old, answered from the
            # old forecast meanwhile.
            moved = QueueCounts(waiting=10_000, running=1, stats={"calls:p1": 1.0})
            cache = estimates._caches[ctx]
            cache.read_at -= estimates.MIN_AGE + 1
            cache.built_at -= 60  # past its rebuild limit (REBUILD_SHARE times its build's CPU time)
            assert await estimates.current(ctx, moved) is first
            assert cache.reading is not None
            await cache.reading
            assert await estimates.current(ctx, moved) is not first
        finally:
            await ctx.store.close()

    asyncio.run(main())


def test_a_slot_holder_without_a_token_counts_ahead_and_one_with_a_token_holds_a_place(
    store_url: str, data_dir: str
) -> None:
    """With one place a window: a dispatched task with no token yet takes the place before the
    first waiting task, which then waits a window, and is told it starts now; once its token is
    granted, the place shows as taken in the pool instead, and the answers are the same."""
    config = make_config(store_url, data_dir, slots=4, pools=(("p1", 6, 10.0),))
    now = time.time()
    first, second = submitted(at=now), submitted(at=now)
    append_to(config, [first, second])
    dispatch = TaskDispatched(task_id=first.task_id, attempt=1, worker=0, lease_deadline=now + 60, at=now)
    append_to(config, [dispatch])

    async def ranges(running: int) -> tuple[float | None, float | None, float | None]:
        """The waiting task's p50 and p90, and the dispatched one's p50."""
        ctx = Context(config)
        try:
            counts = await ctx.store.counts()
            assert counts.running == running
            eta = await estimates.eta_range_of(ctx, 0, counts)
            view = await ctx.store.task_view(first.task_id)
            assert view is not None
            dispatched = await estimates.task_eta(ctx, first.task_id, view, None, counts)
            return eta.p50, eta.p90, dispatched.p50
        finally:
            await ctx.store.close()

    p50, p90, its_own = asyncio.run(ranges(1))
    assert p50 is not None and p90 is not None and 9.5 <= p50 <= 10.1 and p90 >= p50
    assert its_own == 0.0
    grant = KeyTokenGranted(
        pool="p1", key_id="p1#1", task_id=first.task_id, attempt=1, capacity=1, window=10.0, at=time.time()
    )
    append_to(config, [grant])
    again, _, granted = asyncio.run(ranges(1))
    assert again is not None and 9.5 <= again <= 10.1 and granted == 0.0
