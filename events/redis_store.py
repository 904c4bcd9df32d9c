"""The Redis/Valkey event store: one stream, read models written in the same MULTI/EXEC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from events.admission import Admission, Refusal, Seen, admit
from events.catalogue import ROUND_SPAN, Event, SnapshotTaken, StoredEvent, TaskSubmitted
from events.codec import decode, encode, log_entry
from events.errors import StoreUnavailableError
from events.keys import Keys
from events.projection import project
from events.redis_commands import ROUND_COUNTER_SECONDS, SEEN_SCRIPT, queue_op
from events.store import NO_BOUNDS, Expect, QueueCounts, SubmitReceipt

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# Locks that keep one user's submits in turn within a replica.
USER_STRIPES = 64


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
        # Submits of one user take turns within a replica (so they do not keep aborting each
        # other's WATCH); submits of different users run side by side.
        self._user_turns = [asyncio.Lock() for _ in range(USER_STRIPES)]

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

    async def submit(self, event: TaskSubmitted, admission: Admission = NO_BOUNDS) -> SubmitReceipt:
        """WATCH, read what admission needs, then one MULTI/EXEC: the events, their read models,
        then ZRANK and the counts.

        The user's hash is watched, so a concurrent charge, refund or grant of the same user
        (from any replica) makes this transaction retry on fresh figures: a balance never
        goes below zero. The task's round counter is taken with INCR before the transaction;
        a retried or refused submit leaves a gap in it, which orders nothing wrongly.

        A task's place is its (round, n), n from INCR: the QueueActor and the waiting set
        order tasks by it, whatever order their transactions reach the stream in.

        With `waitaof`, WAITAOF on the same connection then waits until the server's
        append-only file holds the write; a server that cannot confirm it is unavailable.
        """
        idem = self.keys.idempotency(event.user_id, event.idempotency_key) if event.idempotency_key else None
        user = self.keys.user(event.user_id)
        try:
            async with self._lane() as conn:
                while True:
                    turn = self._user_turns[zlib.crc32(event.user_id.encode()) % USER_STRIPES]
                    async with turn, conn.pipeline(transaction=True) as pipe:
                        event = replace(event, at=time.time())
                        await pipe.watch(user, *([idem] if idem else []))
                        if idem is not None:
                            first = await pipe.hgetall(idem)
                            if first:
                                await pipe.reset()
                                return SubmitReceipt(
                                    "", None, await self.counts(), first["task_id"], first["digest"]
                                )
                        seen, round_, n = await self._seen(pipe, user)
                        admitted = admit(event, admission, seen, round_, n)
                        if isinstance(admitted, Refusal):
                            await pipe.reset()
                            return SubmitReceipt("", None, await self.counts(), refused=admitted)
                        pipe.multi()
                        at = [self._queue_event(pipe, e) for e in admitted]
                        submitted = at[[e.type for e in admitted].index(TaskSubmitted.type)]
                        pipe.zrank(self.keys.waiting, event.task_id)
                        pipe.zcard(self.keys.waiting)
                        pipe.scard(self.keys.running)
                        pipe.hgetall(self.keys.stats)
                        pipe.hget(user, "balance")
                        try:
                            results = await pipe.execute()
                        except WatchError:
                            continue  # the user's balance or key changed meanwhile: read again
                    break
                if self._waitaof:
                    await self._wait_aof(conn)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        rank, waiting, running, stats, balance = results[-5:]
        counts = QueueCounts(int(waiting), int(running), {k: float(v) for k, v in stats.items()})
        return SubmitReceipt(str(results[submitted]), rank, counts, balance=int(balance or 0))

    async def _seen(self, pipe: Any, user: str) -> tuple[Seen, int, int]:
        """One script call: the user's balance and newest round, the current round and the
        waiting count; then the new task's round and its number within that round (INCR)."""
        reply = await pipe.eval(
            SEEN_SCRIPT,
            3,
            user,
            self.keys.waiting,
            self.keys.stats,
            self.keys.round_counters,
            ROUND_SPAN,
            ROUND_COUNTER_SECONDS,
        )
        balance, welcomed, last, current, round_, n, waiting = (int(x) for x in reply)
        return Seen(balance, bool(welcomed), last, current, waiting), round_, n

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
            queue_op(pipe, op)
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

    async def grant_times(
        self, since: Mapping[str, float], newest: Mapping[str, int] | None = None
    ) -> dict[str, list[float]]:
        """ZREVRANGEBYSCORE per pool (LIMIT `newest[pool]`), in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            for pool, t in since.items():
                keep = (newest or {}).get(pool)
                pipe.zrevrangebyscore(
                    self.keys.grants(pool),
                    "+inf",
                    f"({t}",
                    withscores=True,
                    **({"start": 0, "num": keep} if keep else {}),
                )
            replies = await pipe.execute()
        return {
            pool: [float(score) for _, score in reversed(reply)]
            for pool, reply in zip(since, replies, strict=True)
        }

    async def pool_states(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """HGETALL of each pool's read model, in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.pool(name))
            replies = await pipe.execute()
        return {name: dict(reply) for name, reply in zip(names, replies, strict=True)}

    async def user(self, user_id: str, entries: int = 20) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """HGETALL of the user's hash and LRANGE of its ledger, in one round trip."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.user(user_id))
            pipe.lrange(self.keys.ledger(user_id), 0, max(0, entries - 1))
            totals, ledger = await pipe.execute()
        return dict(totals), [json.loads(e) for e in ledger]

    async def token(self, digest: str) -> dict[str, str] | None:
        """HGETALL of the token read model."""
        found: dict[str, str] = await self._r.hgetall(self.keys.token(digest))
        return found or None

    async def recent_failures(self) -> list[dict[str, Any]]:
        """The newest failed tasks, newest first."""
        raw: list[str] = await self._r.lrange(self.keys.failures, 0, -1)
        return [json.loads(r) for r in raw]

    async def tokens(self) -> dict[str, str]:
        """Token id -> JSON of its user, role and creation time."""
        found: dict[str, str] = await self._r.hgetall(self.keys.tokens)
        return found

    async def token_digest(self, token_id: str) -> str | None:
        """The digest of a live token, found by its id."""
        about = await self._r.hget(self.keys.tokens, token_id)
        return str(json.loads(about)["digest"]) if about else None

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
