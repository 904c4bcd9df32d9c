"""The clients of one ingress replica: event store, watch hub, blob store, pools cache."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import structlog
from PIL import Image
from redis.exceptions import RedisError

from actors.blobs import blob_store
from actors.config import Config, lane_weights
from events.errors import StoreUnavailableError
from events.lane_positions import Lanes
from events.redis_store import RedisEventStore
from serve_app.http.pools import PoolView, read_pools
from serve_app.http.watch import Hub

# Whether the actors answer, given by the deployment that runs them.
Readiness = Callable[[], Awaitable[bool]]
# Asks the QueueActor to cancel a waiting task: "cancelled", "running" or "ended".
Canceller = Callable[[str], Awaitable[str]]

POOLS_FRESH_SECONDS = 0.2

log = structlog.get_logger("genqueue.api")


class Context:
    """Per-replica clients, made on first use inside the replica's event loop.

    `readiness` and `canceller` reach the actors; None where no actors run (the app alone).
    """

    def __init__(
        self, config: Config, readiness: Readiness | None = None, canceller: Canceller | None = None
    ) -> None:
        self.config = config
        self.readiness = readiness
        self.canceller = canceller
        self.blobs = blob_store(config)
        self._store: RedisEventStore | None = None
        self._hub: Hub | None = None
        self._pools: tuple[float, list[PoolView]] = (-math.inf, [])
        # The read on its way, if any, and when it began (monotonic).
        self._pools_read: tuple[float, asyncio.Future[list[PoolView]]] | None = None
        # The priority lanes positions are read among (None without `[[lanes]]`), and their
        # weights for the ETA: fixed with the config, so made once.
        self.lanes = Lanes.of(lane_weights(config), config.queue.slots)
        self.lane_weights = lane_weights(config)

    @property
    def store(self) -> RedisEventStore:
        """The event store client of this replica."""
        if self._store is None:
            redis = self.config.redis
            self._store = RedisEventStore.from_url(
                redis.url, redis.namespace, max_connections=64, waitaof=redis.durability == "waitaof"
            )
        return self._store

    @property
    def hub(self) -> Hub:
        """The replica's stream tailer for watchers."""
        if self._hub is None:
            self._hub = Hub(self.store, lanes=self.lanes)
        return self._hub

    async def recent_pools(self) -> list[PoolView]:
        """The pools' views, read at most every POOLS_FRESH_SECONDS: a burst of submits shares
        one read for its ETAs (and one read in flight) instead of two round trips each."""
        now = time.monotonic()
        if now - self._pools[0] <= POOLS_FRESH_SECONDS:
            return self._pools[1]
        # A read still on its way is joined only if it began as recently as a cached read may
        # have: one begun earlier (a slow round trip on a loaded machine) may predate an event
        # that whoever asks now has heard of, and would hand it the views from before.
        if (
            self._pools_read is None
            or self._pools_read[1].done()
            or now - self._pools_read[0] > POOLS_FRESH_SECONDS
        ):
            self._pools_read = (now, asyncio.ensure_future(self._read_pools(now)))
        # Shielded: a caller that goes away does not cancel the read the others wait on.
        return await asyncio.shield(self._pools_read[1])

    async def _read_pools(self, began: float) -> list[PoolView]:
        # Dated from when the read began: views that came back late must not pass for views
        # read after an event that landed while they were on their way.
        views = await read_pools(self.store, self.config)
        if began > self._pools[0]:  # a read begun later may have come back first
            self._pools = (began, views)
        return views

    async def warm(self) -> None:
        """Ready the replica for a burst before its first request.

        Opens as many connections as submits run at once in the event store's pool (the
        submit's rate check runs in its script), loads Pillow's image plugins and reads the
        pools' views. Otherwise the first submits of a burst pay for all of it (connections,
        lazy imports, package metadata lookups) while hundreds of other requests arrive, and
        the first images start later. A store that cannot be reached is no error here: submits then answer
        503 as they would anyway.
        """
        Image.init()
        width = self.config.server.submit_concurrency
        try:
            await asyncio.gather(*(self.store.ping() for _ in range(width)))
            await self.store.load_scripts()
            await self.recent_pools()
        except (StoreUnavailableError, RedisError, OSError) as exc:
            log.warning("could not warm up the store connections", error=str(exc))
