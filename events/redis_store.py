"""The Redis/Valkey event store: one stream, read models written in the same MULTI/EXEC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from events.catalogue import Event, SnapshotTaken, StoredEvent, TaskSubmitted
from events.codec import decode, encode, log_entry
from events.errors import StoreUnavailableError
from events.keys import Keys
from events.projection import Expire, HDel, HIncr, HSet, Op, SAdd, SRem, ZAdd, ZRem, ZTrim, project
from events.store import Expect, QueueCounts, SubmitReceipt

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _queue_op(pipe: Any, op: Op) -> None:
    match op:
        case HSet():
            pipe.hset(op.key, mapping=op.mapping)
        case HIncr():
            if isinstance(op.amount, int):
                pipe.hincrby(op.key, op.field, op.amount)
            else:
                pipe.hincrbyfloat(op.key, op.field, op.amount)
        case ZAdd():
            pipe.zadd(op.key, {op.member: op.score})
        case ZRem():
            pipe.zrem(op.key, op.member)
        case SAdd():
            pipe.sadd(op.key, op.member)
        case SRem():
            pipe.srem(op.key, op.member)
        case ZTrim():
            pipe.zremrangebyscore(op.key, "-inf", op.max_score)
        case Expire():
            pipe.expire(op.key, op.seconds)
        case HDel():
            pipe.hdel(op.key, op.field)


class RedisEventStore:
    """EventStore on `redis.asyncio`; any Redis >= 6.2 or Valkey."""

    def __init__(self, client: aioredis.Redis, namespace: str, waitaof: bool = False) -> None:
        # Typed loosely on purpose: redis-py types replies as bytes | str unions, while
        # decode_responses=True makes every reply here a str.
        self._r: Any = client
        self.keys = Keys(namespace)
        self._waitaof = waitaof
        self._lane_count = 32
        self._lanes: asyncio.Queue[Any] | None = None
        self._submit_order = asyncio.Lock()

    @classmethod
    def from_url(
        cls, url: str, namespace: str, max_connections: int = 32, waitaof: bool = False
    ) -> RedisEventStore:
        """A store on a new, bounded connection pool to `url`.

        The pool blocks callers beyond `max_connections` instead of opening more: a burst
        of hundreds of requests then shares a few connections rather than overflowing the
        server's accept backlog.
        """
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=10,
            decode_responses=True,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        return cls(aioredis.Redis(connection_pool=pool), namespace, waitaof)

    async def append(
        self, events: Sequence[Event], expect: Mapping[str, Expect] | None = None
    ) -> list[str] | None:
        """Append events and their read-model writes in one MULTI/EXEC."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                if expect:
                    watched = [self.keys.task(t) for t in expect]
                    await pipe.watch(*watched)
                    for task_id, want in expect.items():
                        status, attempts = await pipe.hmget(self.keys.task(task_id), "status", "attempts")
                        if status != want.status or int(attempts or -1) != want.attempt:
                            await pipe.reset()
                            return None
                    pipe.multi()
                xadds = [self._queue_event(pipe, event) for event in events]
                try:
                    results = await pipe.execute()
                except WatchError:
                    return None
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return [str(results[i]) for i in xadds]

    async def submit(self, event: TaskSubmitted) -> SubmitReceipt:
        """One MULTI/EXEC: the event, its read models, then ZRANK and the counts.

        The event's `at` is stamped here, under a lock, right before its transaction: so
        within a replica the order of `at` is the order in the stream, and the waiting set
        (scored by `at`) ranks tasks as the queue will start them. Across replicas the two
        orders agree up to the replicas' clock skew.

        With `waitaof`, WAITAOF on the same connection then waits until the server's
        append-only file holds the write; a server that cannot confirm it is unavailable.
        """
        idem = self.keys.idempotency(event.user_id, event.idempotency_key) if event.idempotency_key else None
        try:
            async with self._lane() as conn:
                while True:
                    async with self._submit_order, conn.pipeline(transaction=True) as pipe:
                        event = replace(event, at=time.time())
                        if idem is not None:
                            await pipe.watch(idem)
                            first = await pipe.hgetall(idem)
                            if first:
                                await pipe.reset()
                                return SubmitReceipt(
                                    "", None, await self.counts(), first["task_id"], first["digest"]
                                )
                            pipe.multi()
                        self._queue_event(pipe, event)
                        pipe.zrank(self.keys.waiting, event.task_id)
                        pipe.zcard(self.keys.waiting)
                        pipe.scard(self.keys.running)
                        pipe.hgetall(self.keys.stats)
                        try:
                            results = await pipe.execute()
                        except WatchError:
                            continue  # the same key was submitted concurrently: read it
                    break
                if self._waitaof:
                    await self._wait_aof(conn)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        rank, waiting, running, stats = results[-4:]
        counts = QueueCounts(int(waiting), int(running), {k: float(v) for k, v in stats.items()})
        return SubmitReceipt(str(results[0]), rank, counts)

    @contextlib.asynccontextmanager
    async def _lane(self) -> AsyncIterator[Any]:
        """A client for one submit. For WAITAOF it must be the connection that wrote, and a
        pipeline always takes its connection from its client's pool, so each durable lane is a
        client whose pool holds exactly one connection."""
        if not self._waitaof:
            yield self._r
            return
        if self._lanes is None:
            kwargs = dict(self._r.connection_pool.connection_kwargs)
            self._lanes = asyncio.Queue()
            for _ in range(self._lane_count):
                pool = aioredis.BlockingConnectionPool(
                    max_connections=1,
                    timeout=10,
                    connection_class=self._r.connection_pool.connection_class,
                    **kwargs,
                )
                self._lanes.put_nowait(aioredis.Redis(connection_pool=pool))
        lane = await self._lanes.get()
        try:
            yield lane
        finally:
            self._lanes.put_nowait(lane)

    @staticmethod
    async def _wait_aof(conn: Any) -> None:
        try:
            local, _ = await conn.execute_command("WAITAOF", 1, 0, 5000)
        except ResponseError as exc:  # e.g. the server runs without an append-only file
            raise StoreUnavailableError(f"WAITAOF refused: {exc}") from exc
        if int(local) < 1:
            raise StoreUnavailableError("the append-only file did not confirm the write within 5 s")

    def _queue_event(self, pipe: Any, event: Event) -> int:
        """Queue one event's XADD and read-model writes; returns the XADD's index in the pipeline."""
        fields = encode(event)
        index = len(pipe.command_stack)
        pipe.xadd(self.keys.events, fields)
        if fields["task"]:
            pipe.rpush(self.keys.task_log(fields["task"]), log_entry(fields))
        for op in project(event, self.keys):
            _queue_op(pipe, op)
        return index

    def _decode(self, entries: list[tuple[str, dict[str, str]]]) -> list[StoredEvent]:
        return [StoredEvent(eid, decode(fields)) for eid, fields in entries]

    async def read(self, after: str = "0-0", count: int | None = None) -> list[StoredEvent]:
        """Events after stream id `after`."""
        try:
            entries = await self._r.xrange(self.keys.events, f"({after}", "+", count=count)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return self._decode(entries)

    async def read_raw(
        self, after: str = "0-0", count: int = 10_000, end: str = "+"
    ) -> list[tuple[str, dict[str, str]]]:
        """Undecoded stream entries after `after` (for audits that must survive unknown events)."""
        try:
            entries: list[tuple[str, dict[str, str]]] = await self._r.xrange(
                self.keys.events, f"({after}", end, count=count
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return entries

    async def read_range(self, start: str = "-", end: str = "+") -> list[StoredEvent]:
        """Events between two stream ids, both included."""
        try:
            entries = await self._r.xrange(self.keys.events, start, end)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return self._decode(entries)

    async def tail(self, after: str, block_ms: int, count: int = 1000) -> list[StoredEvent]:
        """XREAD BLOCK from `after`."""
        try:
            reply = await self._r.xread({self.keys.events: after}, count=count, block=max(1, block_ms))
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        if not reply:
            return []
        return self._decode(reply[0][1])

    async def last_id(self) -> str:
        """The newest event's id."""
        entries = await self._r.xrevrange(self.keys.events, count=1)
        return str(entries[0][0]) if entries else "0-0"

    async def task_view(self, task_id: str) -> dict[str, str] | None:
        """The task view hash."""
        view: dict[str, str] = await self._r.hgetall(self.keys.task(task_id))
        return view or None

    async def task_view_and_position(self, task_id: str) -> tuple[dict[str, str] | None, int | None]:
        """The task view and its rank in the waiting set, read in one MULTI/EXEC so they agree."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.task(task_id))
            pipe.zrank(self.keys.waiting, task_id)
            view, rank = await pipe.execute()
        return (view or None), rank

    async def task_log(self, task_id: str) -> list[dict[str, str]]:
        """The task's events, in stream order."""
        raw: list[str] = await self._r.lrange(self.keys.task_log(task_id), 0, -1)
        return [json.loads(r) for r in raw]

    async def position(self, task_id: str) -> int | None:
        """ZRANK in the waiting set."""
        rank: int | None = await self._r.zrank(self.keys.waiting, task_id)
        return rank

    async def counts(self) -> QueueCounts:
        """ZCARD, SCARD and the counters, in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.waiting)
            pipe.scard(self.keys.running)
            pipe.hgetall(self.keys.stats)
            waiting, running, stats = await pipe.execute()
        return QueueCounts(int(waiting), int(running), {k: float(v) for k, v in stats.items()})

    async def grant_times(self, since: Mapping[str, float]) -> dict[str, list[float]]:
        """ZRANGEBYSCORE per pool, in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            for pool, t in since.items():
                pipe.zrangebyscore(self.keys.grants(pool), f"({t}", "+inf", withscores=True)
            replies = await pipe.execute()
        return {
            pool: [float(score) for _, score in reply] for pool, reply in zip(since, replies, strict=True)
        }

    async def pool_states(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """HGETALL of each pool's read model, in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.pool(name))
            replies = await pipe.execute()
        return {name: dict(reply) for name, reply in zip(names, replies, strict=True)}

    async def save_snapshot(self, actor: str, covers: str, document: str, keep: int = 3) -> None:
        """LPUSH, LTRIM and the snapshot.taken event in one MULTI/EXEC."""
        key = self.keys.snapshots(actor)
        event = SnapshotTaken(actor=actor, covers=covers, bytes=len(document), at=time.time())
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.lpush(key, document)
                pipe.ltrim(key, 0, keep - 1)
                self._queue_event(pipe, event)
                await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc

    async def load_snapshots(self, actor: str) -> list[str]:
        """LRANGE of the actor's snapshots."""
        try:
            docs: list[str] = await self._r.lrange(self.keys.snapshots(actor), 0, -1)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return docs

    async def histograms(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """HGETALL of each histogram hash, in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.histogram(name))
            replies = await pipe.execute()
        return {n: {k: float(v) for k, v in r.items()} for n, r in zip(names, replies, strict=True)}

    async def alerts(self) -> list[dict[str, Any]]:
        """HVALS of the active-alerts hash."""
        raw: list[str] = await self._r.hvals(self.keys.alerts)
        return sorted((json.loads(r) for r in raw), key=lambda a: str(a["name"]))

    async def ping(self) -> bool:
        """PING."""
        try:
            return bool(await self._r.ping())
        except UNAVAILABLE:
            return False

    async def close(self) -> None:
        """Close the pool."""
        await self._r.aclose()
        await self._r.connection_pool.disconnect()
        while self._lanes is not None and not self._lanes.empty():
            lane = self._lanes.get_nowait()
            await lane.aclose()
            await lane.connection_pool.disconnect()
