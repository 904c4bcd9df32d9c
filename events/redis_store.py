"""The Redis/Valkey event store: one stream, read models written in the same MULTI/EXEC."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from events.admission import Admission
from events.catalogue import Event, SnapshotTaken, StoredEvent, TaskSubmitted
from events.codec import decode_entries, encode
from events.errors import StoreUnavailableError
from events.keys import Keys
from events.projection import project
from events.redis_append import APPEND_SCRIPT, Batch
from events.redis_commands import queue_op
from events.redis_forget import Forgetting, forget_ended
from events.redis_reads import ReadModels
from events.redis_submit import SUBMIT_SCRIPT, calls, receipt, run_calls
from events.store import NO_BOUNDS, Expect, SubmitReceipt

# KEYS: an actor's snapshot list, the key of the snapshot just written; ARGV: how many to keep.
# Each snapshot is a string of its own, the list holds their keys, newest first: putting one in
# place is a RENAME of the key its parts were written to (O(1)), where the script that copied a
# document into the list held the server for the whole copy (130 ms at 100,000 waiting tasks,
# `bench/snapshot_stall.py`; every other client waits). Keys past the newest `keep` are dropped
# (UNLINK); an entry that is not such a key (a document stored whole by an earlier version) is
# only trimmed.
_KEEP_NEWEST = """
redis.call('LPUSH', KEYS[1], KEYS[2])
local prefix = KEYS[1] .. ':'
for _, old in ipairs(redis.call('LRANGE', KEYS[1], ARGV[1], -1)) do
  if string.sub(old, 1, #prefix) == prefix then redis.call('UNLINK', old) end
end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
"""

# Parts sent per round trip: each send holds the caller's loop only for its own few megabytes.
_PARTS_PER_CALL = 16

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisEventStore(ReadModels):
    """EventStore on `redis.asyncio`; any Redis >= 6.2 or Valkey."""

    def __init__(self, client: aioredis.Redis, namespace: str, waitaof: bool = False) -> None:
        # Typed loosely on purpose: redis-py types replies as bytes | str unions, while
        # decode_responses=True makes every reply here a str.
        self._r: Any = client
        self.keys = Keys(namespace)
        self._waitaof = waitaof
        self._lane_count = 32
        self._lanes: asyncio.Queue[Any] | None = None
        self._submit_script = client.register_script(SUBMIT_SCRIPT)
        self._append_script = client.register_script(APPEND_SCRIPT)

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
        """Append events and their read-model writes atomically, in one round trip."""
        (ids,) = await self.append_many([(events, expect)])
        return ids

    async def append_many(
        self, groups: Sequence[tuple[Sequence[Event], Mapping[str, Expect] | None]]
    ) -> list[list[str] | None]:
        """Append several groups in one script call, as if appended one after another: each group
        is written whole if its expectations hold (after the groups before it), else not at
        all (None for it). See `events.redis_append`."""
        batch = Batch()
        for events, expect in groups:
            batch.add(self.keys, events, expect)
        try:
            replies = await self._append_script(keys=batch.keys, args=[batch.argument()])
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return [
            [str(i) for i in reply] if reply or not events else None
            for reply, (events, _) in zip(replies, groups, strict=True)
        ]

    async def submit(self, event: TaskSubmitted, admission: Admission = NO_BOUNDS) -> SubmitReceipt:
        """The whole submit in one script call (`events.redis_submit`): the token's rate, the
        idempotency key, admission, the round counter, the events and their read models, then
        the task's rank, the counts and the balance.

        A task's place is its (round, n), n from INCR: the QueueActor and the waiting set order
        tasks by it, whatever order their submits reach the stream in.

        With `waitaof`, WAITAOF on the same connection then waits until the server's
        append-only file holds the write; a server that cannot confirm it is unavailable.
        """
        (done,) = await self.submit_many([event], [admission])
        return done

    async def submit_many(
        self, events: Sequence[TaskSubmitted], admissions: Sequence[Admission]
    ) -> list[SubmitReceipt]:
        """Each submit as `submit` makes it, pipelined in one round trip, each with its own receipt.

        Submits that share a rate count once against it: the first takes the hit, and the
        others pass exactly when it did (a batch is one request against its token's rate).
        """
        now = time.time()
        stamped = [replace(e, at=now) for e in events]
        batch = calls(self.keys, stamped, admissions)
        if not batch:
            return []
        try:
            async with self._lane() as conn:
                replies = await run_calls(conn, self._submit_script, batch)
                if self._waitaof:
                    await self._wait_aof(conn)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return [receipt(r, a) for r, a in zip(replies, admissions, strict=True)]

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
        """Queue one event's XADD and read-model writes; returns the XADD's index in the pipeline.

        For events of no task only: a task's audit list takes the XADD's id, which only the
        scripts (`append`) know before the transaction ends."""
        fields = encode(event)
        if fields["task"]:
            raise ValueError(f"{event.type} is a task's event: append it with `append`")
        index = len(pipe.command_stack)
        pipe.xadd(self.keys.events, fields)
        for op in project(event, self.keys):
            queue_op(pipe, op)
        return index

    async def read(self, after: str = "0-0", count: int | None = None) -> list[StoredEvent]:
        """Events after stream id `after`."""
        try:
            entries = await self._r.xrange(self.keys.events, f"({after}", "+", count=count)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return decode_entries(entries)

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

    async def read_flat(
        self, after: str = "0-0", count: int = 10_000, end: str = "+", raw: bool = False
    ) -> list[list[Any]]:
        """Stream entries after `after` as the server sends them, `[id, [name, value, ...]]`.

        The same entries as `read_raw` without building a dict of each entry's fields: a whole
        log read through `codec.decode_flat` spends a third less time reading. With `raw` the
        names and values stay bytes (ids are still str): `decode_flat` reads them as they are,
        and the read skips decoding every field to text, a fifth of its time.
        """
        pool = self._r.connection_pool
        try:
            conn = await pool.get_connection()
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        try:
            await conn.send_command("XRANGE", self.keys.events, f"({after}", end, "COUNT", count)
            reply: list[list[Any]] = await conn.read_response(disable_decoding=raw)
        except UNAVAILABLE as exc:
            await conn.disconnect()
            raise StoreUnavailableError(str(exc)) from exc
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        if raw:
            return [[entry_id.decode(), fields] for entry_id, fields in reply]
        return reply

    async def read_range(self, start: str = "-", end: str = "+") -> list[StoredEvent]:
        """Events between two stream ids, both included."""
        try:
            entries = await self._r.xrange(self.keys.events, start, end)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return decode_entries(entries)

    async def tail(self, after: str, block_ms: int, count: int = 1000) -> list[StoredEvent]:
        """XREAD BLOCK from `after`."""
        return decode_entries(await self.tail_raw(after, block_ms, count))

    async def tail_raw(
        self, after: str, block_ms: int, count: int = 1000
    ) -> list[tuple[str, dict[str, str]]]:
        """`tail`'s entries undecoded (stream id, fields): for a reader that decodes only some."""
        try:
            reply = await self._r.xread({self.keys.events: after}, count=count, block=max(1, block_ms))
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return reply[0][1] if reply else []

    async def last_id(self) -> str:
        """The newest event's id."""
        entries = await self._r.xrevrange(self.keys.events, count=1)
        return str(entries[0][0]) if entries else "0-0"

    async def save_snapshot(self, actor: str, covers: str, document: str | list[str], keep: int = 3) -> None:
        """The document under a key of its own, put first in the actor's list of snapshots (the
        oldest past `keep` dropped), and the snapshot.taken event, in one MULTI/EXEC.

        A document in parts is first APPENDed part by part to a scratch key, which the
        transaction renames: the server joins the parts and never copies the whole, so no
        client builds (or holds its loop for) one string of tens of megabytes, and no command
        holds the server for one.
        """
        key = self.keys.snapshots(actor)
        scratch = f"{key}:writing"
        name = f"{key}:{covers}:{time.time_ns()}"
        size = len(document) if isinstance(document, str) else sum(len(p) for p in document)
        event = SnapshotTaken(actor=actor, covers=covers, bytes=size, at=time.time())
        try:
            if not isinstance(document, str):
                await self._r.delete(scratch)
                for start in range(0, len(document), _PARTS_PER_CALL):
                    async with self._r.pipeline(transaction=False) as pipe:
                        for part in document[start : start + _PARTS_PER_CALL]:
                            pipe.append(scratch, part)
                        await pipe.execute()
            async with self._r.pipeline(transaction=True) as pipe:
                if isinstance(document, str):
                    pipe.set(name, document)
                elif not document:
                    pipe.set(name, "")
                else:
                    pipe.rename(scratch, name)
                pipe.eval(_KEEP_NEWEST, 2, key, name, keep)
                self._queue_event(pipe, event)
                await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc

    async def snapshot_documents(self, actor: str) -> AsyncGenerator[str, None]:
        """The actor's snapshots, newest first, each read only when the one before it was not
        enough (a restart reads one of tens of megabytes, not all it keeps). Each entry of the
        actor's list is the key of one (a document stored whole by an earlier version is taken
        as it is); one whose key is gone is left out."""
        key = self.keys.snapshots(actor)
        try:
            entries: list[str] = await self._r.lrange(key, 0, -1)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        for entry in entries:
            if not entry.startswith(f"{key}:"):
                yield entry
                continue
            try:
                document: str | None = await self._r.get(entry)
            except UNAVAILABLE as exc:
                raise StoreUnavailableError(str(exc)) from exc
            if document is not None:
                yield document

    async def load_scripts(self) -> None:
        """SCRIPT LOAD of the submit's and the append's scripts, so that the first calls of a
        burst find them (else each concurrent first call loads its own copy)."""
        try:
            for script in (self._submit_script, self._append_script):
                await self._r.script_load(script.script)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc

    async def ping(self) -> bool:
        """PING."""
        try:
            return bool(await self._r.ping())
        except UNAVAILABLE:
            return False

    async def trim_to(self, archived_to: str) -> int:
        """XTRIM MINID: drop the stream's entries up to `archived_to` (included), which a
        `log.archived` event must already cover; returns how many went."""
        ms, _, seq = archived_to.partition("-")
        try:
            # Exact (redis-py trims approximately by default, leaving whole nodes behind).
            trimmed: int = await self._r.xtrim(
                self.keys.events, minid=f"{ms}-{int(seq or 0) + 1}", approximate=False
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return trimmed

    async def forget_ended(self, rule: Forgetting) -> int:
        """Delete the read models of the finished tasks `rule` allows (`events.redis_forget`);
        returns how many tasks were forgotten."""
        try:
            return await forget_ended(self._r, self.keys, rule)
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(str(exc)) from exc

    async def close(self) -> None:
        """Close the pool."""
        await self._r.aclose()
        await self._r.connection_pool.disconnect()
        while self._lanes is not None and not self._lanes.empty():
            lane = self._lanes.get_nowait()
            await lane.aclose()
            await lane.connection_pool.disconnect()
