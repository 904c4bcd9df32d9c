"""The KeyPoolActor: rate-limit tokens from quota pools in FIFO order, never overrunning a window."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

from actors.config import Config
from actors.keypool_logic import PoolState, choose, grant, next_free_at
from actors.logs import configure
from actors.telemetry import PoolMetrics
from events.catalogue import KeyTokenGranted, stream_id_key
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import EventStore

log = structlog.get_logger("genqueue.keypool")

SNAPSHOT_ACTOR = "keypool"
SNAPSHOT_SECONDS = 10.0


@dataclass(slots=True)
class _Waiter:
    task_id: str
    attempt: int
    future: asyncio.Future[tuple[str, str]]


class KeyPool:
    """Async actor; all limiter state changes happen in one granter task, in arrival order."""

    def __init__(self, config: Config) -> None:
        configure()
        self._config = config
        self._pools = [
            PoolState(name=p.name, rpm=p.rpm, window=p.window_seconds, key_ids=p.key_ids)
            for p in config.pools
        ]
        self._waiters: deque[_Waiter] = deque()
        self._granted: dict[tuple[str, int], tuple[str, str]] = {}
        self._store: EventStore | None = None
        self._wake: asyncio.Event | None = None
        self._granter: asyncio.Task[None] | None = None
        self._init_lock: asyncio.Lock | None = None
        self._last_grant_id = "0-0"
        self._snapshot_covers = "0-0"
        self._snapshot_at = time.monotonic()
        self._recovery: dict[str, Any] = {}
        self._metrics = PoolMetrics()

    async def _ensure(self) -> None:
        if self._granter is not None:
            return
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._granter is not None:
                return
            self._store = RedisEventStore.from_url(self._config.redis.url, self._config.redis.namespace)
            await self._replay(self._store)
            self._wake = asyncio.Event()
            self._granter = asyncio.create_task(self._grant_loop())

    async def _replay(self, store: EventStore) -> None:
        """Rebuild the limiters: the newest readable snapshot, then the grants after it.

        Nothing older than the longest window matters, so the replay never starts
        earlier than that (stream ids are milliseconds).
        """
        longest = max(p.window for p in self._pools)
        after = f"{int((time.time() - longest) * 1000) - 1}-{2**64 - 1}"
        covers = await self._load_snapshot(store)
        if covers is not None and stream_id_key(covers) >= stream_id_key(after):
            after = covers
        by_name = {p.name: p for p in self._pools}
        count = 0
        while page := await store.read(after, count=10_000):
            for stored in page:
                event = stored.event
                if isinstance(event, KeyTokenGranted) and event.pool in by_name:
                    by_name[event.pool].limiter.record(event.at)
                    self._granted[(event.task_id, event.attempt)] = (event.pool, event.key_id)
                    self._last_grant_id = stored.id
                    count += 1
            after = page[-1].id
        self._recovery = {"snapshot": covers or "0-0", "grants_replayed": count}
        log.info("key pools recovered", snapshot=covers, grants_replayed=count)

    async def _load_snapshot(self, store: EventStore) -> str | None:
        """Restore the newest readable snapshot; returns the stream id it covers."""
        by_name = {p.name: p for p in self._pools}
        for document in await store.load_snapshots(SNAPSHOT_ACTOR):
            try:
                data = json.loads(document)
                if data["v"] != 1:
                    raise ValueError(f"version {data['v']}")
                for name, saved in data["pools"].items():
                    if name in by_name:
                        for at in saved["log"]:
                            by_name[name].limiter.record(float(at))
                        by_name[name].next_key = int(saved["next_key"])
                for task_id, attempt, pool, key_id in data["granted"]:
                    self._granted[(str(task_id), int(attempt))] = (str(pool), str(key_id))
                self._last_grant_id = str(data["covers"])
                return self._last_grant_id
            except (ValueError, KeyError, TypeError) as exc:
                for pool in self._pools:
                    pool.limiter.log.clear()
                self._granted.clear()
                log.warning("key pool snapshot skipped", error=str(exc)[:200])
        return None

    async def _maybe_snapshot(self) -> None:
        """Every SNAPSHOT_SECONDS with new grants: the limiters' logs and the recent grants."""
        assert self._store is not None
        if (
            self._last_grant_id == self._snapshot_covers
            or time.monotonic() - self._snapshot_at < SNAPSHOT_SECONDS
        ):
            return
        recent = list(self._granted.items())[-10_000:]
        document = json.dumps(
            {
                "v": 1,
                "covers": self._last_grant_id,
                "pools": {p.name: {"log": list(p.limiter.log), "next_key": p.next_key} for p in self._pools},
                "granted": [[t, a, pool, key] for (t, a), (pool, key) in recent],
            },
            separators=(",", ":"),
        )
        await self._store.save_snapshot(SNAPSHOT_ACTOR, self._last_grant_id, document)
        self._snapshot_covers = self._last_grant_id
        self._snapshot_at = time.monotonic()

    async def acquire(self, task_id: str, attempt: int) -> tuple[str, str]:
        """Wait in FIFO order for a token; returns (pool, key id). A repeated call gets the same grant."""
        await self._ensure()
        known = self._granted.get((task_id, attempt))
        if known is not None:
            return known
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(task_id, attempt, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    async def _grant_loop(self) -> None:
        assert self._wake is not None and self._store is not None
        while True:
            now = time.time()
            batch: list[tuple[_Waiter, KeyTokenGranted]] = []
            while self._waiters and (pool := choose(self._pools, now)) is not None:
                waiter = self._waiters.popleft()
                if waiter.future.done():
                    continue
                key_id = grant(pool, now)
                batch.append(
                    (
                        waiter,
                        KeyTokenGranted(
                            pool=pool.name,
                            key_id=key_id,
                            task_id=waiter.task_id,
                            attempt=waiter.attempt,
                            capacity=pool.limiter.capacity,
                            window=pool.window,
                            at=now,
                        ),
                    )
                )
            for pool in self._pools:
                self._metrics.update(pool.name, pool.limiter.available(now))
            if batch:
                await self._record(batch)
                with contextlib.suppress(StoreUnavailableError):
                    await self._maybe_snapshot()
            self._wake.clear()
            timeout = next_free_at(self._pools, now) - time.time() if self._waiters else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), None if timeout is None else max(0.0, timeout))

    async def _record(self, batch: list[tuple[_Waiter, KeyTokenGranted]]) -> None:
        """Write the grants before handing them out, so a restart still counts them."""
        assert self._store is not None
        delay = 0.05
        while True:
            try:
                ids = await self._store.append([g for _, g in batch])
                if ids:
                    self._last_grant_id = ids[-1]
                break
            except StoreUnavailableError as exc:
                log.warning("cannot record grants; retrying", error=str(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        for waiter, g in batch:
            self._granted[(g.task_id, g.attempt)] = (g.pool, g.key_id)
            if not waiter.future.done():
                waiter.future.set_result((g.pool, g.key_id))
        if len(self._granted) > 100_000:
            for k in list(self._granted)[: len(self._granted) // 2]:
                del self._granted[k]

    async def pid(self) -> int:
        """The actor's process id (tests watch it change across a restart)."""
        return os.getpid()

    async def recovery(self) -> dict[str, Any]:
        """Where the last start-up took its state from: the snapshot's stream id and grants replayed."""
        await self._ensure()
        return dict(self._recovery)

    async def status(self) -> list[dict[str, Any]]:
        """Each pool's limit, calls left in its current window, and the number of waiters."""
        await self._ensure()
        now = time.time()
        return [
            {
                "name": p.name,
                "rpm": p.rpm,
                "window_seconds": p.window,
                "capacity": p.limiter.capacity,
                "available": p.limiter.available(now),
                "next_free_in": max(0.0, p.limiter.next_free_at(now) - now),
                "granted": p.granted,
                "keys": len(p.key_ids),
                "waiting": len(self._waiters),
            }
            for p in self._pools
        ]
