"""The KeyPoolActor: rate-limit tokens from quota pools in FIFO order, never overrunning a window."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from actors.config import Config
from actors.keypool_logic import (
    CallFailure,
    PoolState,
    Tuning,
    choose,
    grant,
    learn,
    next_free_at,
    probe_all,
    soonest,
    usable_at,
)
from actors.logs import configure
from actors.telemetry import PoolMetrics
from events.catalogue import (
    Event,
    KeyTokenGranted,
    stream_id_key,
)
from events.days import pacific_day
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import EventStore

log = structlog.get_logger("genqueue.keypool")

SNAPSHOT_ACTOR = "keypool"
SNAPSHOT_SECONDS = 10.0
METRICS_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Token:
    """A KeyPool answer: a pool and key for one call, or a refusal until `until` (inf: no pool left).

    `not_before`: the time the grant counts from in its window; a grant made ahead (a place
    about to free) is for a call that goes out no earlier.
    """

    pool: str = ""
    key_id: str = ""
    until: float = 0.0
    reason: str = ""
    not_before: float = 0.0

    @property
    def granted(self) -> bool:
        """Whether this is a token (else a refusal)."""
        return bool(self.pool)


@dataclass(order=True, slots=True)
class _Waiter:
    order: float
    seq: int
    task_id: str = field(compare=False)
    attempt: int = field(compare=False)
    future: asyncio.Future[Token] = field(compare=False)


def _stop_on_crash(granter: asyncio.Task[None]) -> None:
    """The grant loop never returns; if it raised, no caller would get a token again. The
    process exits instead, and Ray starts the actor anew (it rebuilds its limiters from the
    event log and the callers' acquires are retried)."""
    if granter.cancelled() or granter.exception() is None:
        return
    log.critical("the grant loop stopped; restarting the key pool", exc_info=granter.exception())
    os._exit(1)


class KeyPool:
    """Async actor; limiter state changes happen on one event loop, tokens go in task order.

    Waiters are served by their task's queue order (then arrival), so a task that went
    back to its place after a 429 gets the next token before later tasks.
    """

    def __init__(self, config: Config) -> None:
        configure()
        self._config = config
        k = config.keypool
        tuning = Tuning(
            decrease=k.decrease,
            probe_after=k.probe_after_windows,
            probe_step=k.probe_step,
            margin=k.margin_seconds,
        )
        self._pools = [
            PoolState(
                name=p.name, rpm=p.rate, window=p.window_seconds, key_ids=p.key_ids, rpd=p.rpd, tuning=tuning
            )
            for p in config.pools
        ]
        self._by_name = {p.name: p for p in self._pools}
        self._hints = {kid: hint for p in config.pools for kid, hint in p.key_hints.items()}
        self._waiters: list[_Waiter] = []
        self._arrivals = itertools.count()
        self._granted: dict[tuple[str, int], Token] = {}
        # Grant times not yet re-dated to their send time (see `sent`).
        self._stamps: dict[tuple[str, int], tuple[PoolState, float]] = {}
        self._store: EventStore | None = None
        self._wake: asyncio.Event | None = None
        self._granter: asyncio.Task[None] | None = None
        self._init_lock: asyncio.Lock | None = None
        self._last_grant_id = "0-0"
        self._snapshot_covers = "0-0"
        self._snapshot_at = time.monotonic()
        self._recovery: dict[str, Any] = {}
        self._metrics = PoolMetrics()
        self._metrics_at = 0.0

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
            await self._load_pool_states(self._store)
            self._wake = asyncio.Event()
            self._granter = asyncio.create_task(self._grant_loop())
            self._granter.add_done_callback(_stop_on_crash)

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
                    self._granted[(event.task_id, event.attempt)] = Token(
                        event.pool, event.key_id, not_before=event.at
                    )
                    self._last_grant_id = stored.id
                    count += 1
            after = page[-1].id
        self._recovery = {"snapshot": covers or "0-0", "grants_replayed": count}
        log.info("key pools recovered", snapshot=covers, grants_replayed=count)

    async def _load_pool_states(self, store: EventStore) -> None:
        """Cooldowns, parking, disabled keys, learned rates and today's calls, from the pool read model."""
        now = time.time()
        states = await store.pool_states([p.name for p in self._pools])
        for pool in self._pools:
            fields = states.get(pool.name, {})
            pool.cooldown_until = float(fields.get("cooldown_until", 0.0))
            pool.parked_until = float(fields.get("parked_until", 0.0))
            if "learned_rpm" in fields:
                pool.set_rate(int(fields["learned_rpm"]), float(fields.get("learned_at", 0.0)))
                pool.set_margin(float(fields.get("learned_margin", 0.0)), pool.last_change)
            for name, value in fields.items():
                key_id = name.removeprefix("disabled:")
                if name.startswith("disabled:") and self._hints.get(key_id) == json.loads(value).get("hint"):
                    pool.disabled.add(key_id)
            pool.day = pacific_day(now)
            pool.day_calls = int(fields.get(f"day:{pool.day}", 0))
        self._recovery["pools"] = {
            p.name: {"rate": p.rate, "parked_until": p.parked_until, "disabled": sorted(p.disabled)}
            for p in self._pools
        }

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
                for task_id, attempt, pool, key_id, *rest in data["granted"]:
                    not_before = float(rest[0]) if rest else 0.0
                    self._granted[(str(task_id), int(attempt))] = Token(
                        str(pool), str(key_id), not_before=not_before
                    )
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
                "granted": [[t, a, tok.pool, tok.key_id, tok.not_before] for (t, a), tok in recent],
            },
            separators=(",", ":"),
        )
        await self._store.save_snapshot(SNAPSHOT_ACTOR, self._last_grant_id, document)
        self._snapshot_covers = self._last_grant_id
        self._snapshot_at = time.monotonic()

    async def acquire(self, task_id: str, attempt: int, order: float = 0.0) -> Token:
        """Wait for a token, served in task `order`; a repeated call gets the same grant.

        Refused (a Token without a pool) when no pool can serve at all: every pool parked
        for the day or out of keys. Cooldowns are short and are waited out.
        """
        await self._ensure()
        known = self._granted.get((task_id, attempt))
        if known is not None:
            return known
        future: asyncio.Future[Token] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, _Waiter(order, next(self._arrivals), task_id, attempt, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    async def _grant_loop(self) -> None:
        assert self._wake is not None and self._store is not None
        lead = self._config.keypool.lead_seconds
        while True:
            now = time.time()
            if learned := probe_all(self._pools, now):
                await self._append_key_events(list(learned))
            if self._waiters and (back := usable_at(self._pools, now)) > now:
                self._refuse_all(back)
            batch: list[tuple[_Waiter, KeyTokenGranted]] = []
            while self._waiters:
                # A pool with a place now; else one whose place frees within the lead, granted
                # for then (the call waits, built, until its place is free).
                pool, at = choose(self._pools, now), now
                if pool is None:
                    if (ahead := soonest(self._pools, now, lead)) is None:
                        break
                    pool, at = ahead
                waiter = heapq.heappop(self._waiters)
                if waiter.future.done():
                    continue
                key_id = grant(pool, at)
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
                            at=at,
                        ),
                    )
                )
            if now - self._metrics_at >= METRICS_SECONDS:
                self._metrics_at = now
                for pool in self._pools:
                    self._metrics.update(pool.name, pool.available(now), pool.rate, pool.state(now))
            if batch:
                await self._record(batch)
                with contextlib.suppress(StoreUnavailableError):
                    await self._maybe_snapshot()
            self._wake.clear()
            timeout = None
            if self._waiters:
                wake_at = next_free_at(self._pools, now) - lead
                if any(p.rate < p.rpm for p in self._pools):
                    wake_at = min(wake_at, now + min(p.window for p in self._pools))
                timeout = None if math.isinf(wake_at) else wake_at - time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), None if timeout is None else max(0.0, timeout))

    def _refuse_all(self, until: float) -> None:
        reason = (
            "every pool is out of keys"
            if math.isinf(until)
            else "every pool is parked (daily quota) or out of keys until "
            + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
        )
        while self._waiters:
            waiter = heapq.heappop(self._waiters)
            if not waiter.future.done():
                waiter.future.set_result(Token(until=until, reason=reason))

    async def sent(self, task_id: str, attempt: int, at: float) -> None:
        """The call of this grant went out on the wire at `at`: count it in its window from then on.

        A call goes out some milliseconds after its grant, by a delay that grows with load
        (hundreds of milliseconds while a burst of submits takes the CPU), and upstream counts
        it on arrival. Its grant is re-dated to that time, so the call that reuses its place a
        window later stays a full window behind it upstream too; the margin then covers only
        the network's jitter. Every window pays the usual delay, a few milliseconds.
        """
        stamp = self._stamps.pop((task_id, attempt), None)
        if stamp is None or not self._config.keypool.redate_late_sends:
            return
        pool, granted_at = stamp
        if at > granted_at:
            pool.limiter.move(granted_at, at)

    async def report(self, pool_name: str, failure: CallFailure) -> None:
        """Learn from a refused call: cool down, park, disable a key or change the rate; writes key events.

        Returns once the events are written and the pool's state changed, so the caller's
        next token already respects it.
        """
        await self._ensure()
        pool = self._by_name.get(pool_name)
        if pool is None:
            return
        events = learn(pool, failure, self._hints.get(failure.key_id, ""), time.time())
        for event in events:
            log.warning("key pool changed", key_event=event.type, pool=pool.name, key_id=failure.key_id)
        if events:
            await self._append_key_events(list(events))
        assert self._wake is not None
        self._wake.set()

    async def _append_key_events(self, events: list[Event]) -> None:
        assert self._store is not None
        delay = 0.05
        while True:
            try:
                await self._store.append(events)
                return
            except StoreUnavailableError as exc:
                log.warning("cannot record key events; retrying", error=str(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

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
            token = Token(g.pool, g.key_id, not_before=g.at)
            self._granted[(g.task_id, g.attempt)] = token
            self._stamps[(g.task_id, g.attempt)] = (self._by_name[g.pool], g.at)
            if not waiter.future.done():
                waiter.future.set_result(token)
        if len(self._stamps) > 10_000:  # grants whose calls were never reported sent
            for k in list(self._stamps)[: len(self._stamps) // 2]:
                del self._stamps[k]
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
        """Each pool's limits, learned rate, tokens left, cooldown, parking and disabled keys."""
        await self._ensure()
        now = time.time()
        return [
            {
                "name": p.name,
                "rpm": p.rpm,
                "rate": p.rate,
                "margin": p.margin,
                "rpd": p.rpd,
                "window_seconds": p.window,
                "capacity": p.limiter.capacity,
                "available": p.available(now),
                "next_free_in": max(0.0, min(p.next_free_at(now), now + 10**9) - now),
                "cooldown_in": max(0.0, p.cooldown_until - now),
                "parked_until": p.parked_until if p.parked_until > now else 0.0,
                "disabled": sorted(p.disabled),
                "day_calls": p.day_calls if p.day == pacific_day(now) else 0,
                "granted": p.granted,
                "keys": len(p.key_ids),
                "waiting": len(self._waiters),
            }
            for p in self._pools
        ]
