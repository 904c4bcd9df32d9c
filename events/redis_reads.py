"""The Redis store's reads of its read models: task views and positions, counts, users, tokens,
grant windows, histograms and alerts (what the HTTP layer and the tools show; the stream
itself is read in `events.redis_store`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from events import lane_reads
from events.codec import log_entry
from events.keys import Keys
from events.lane_positions import Lanes
from events.ops_models import Intake, TaskIndex
from events.store import QueueCounts

# Given the stream ids of entries trimmed from the stream, their fields (name, value, ...) by id.
ArchivedEntries = Callable[[list[str]], Awaitable[Mapping[str, Sequence[str]]]]


def _line(entry: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
    """One audit line from XRANGE's reply for one stream id."""
    ((_, fields),) = entry
    parsed: dict[str, Any] = json.loads(log_entry(fields))
    return parsed


class ReadModels:
    """Reads of the read models, for `RedisEventStore` (which sets `_r` and `keys`)."""

    _r: Any
    keys: Keys

    async def log_state(self) -> dict[str, str]:
        """The log hash: `archived_to`, `digest`, `segment`, `segments`, `archived` and
        `snapshot:<actor>` (empty before anything was archived or snapshotted)."""
        state: dict[str, str] = await self._r.hgetall(self.keys.log)
        return state

    async def log_field(self, name: str) -> str | None:
        """One field of the log hash."""
        value: str | None = await self._r.hget(self.keys.log, name)
        return value

    async def task_view(self, task_id: str) -> dict[str, str] | None:
        """The task view hash."""
        view: dict[str, str] = await self._r.hgetall(self.keys.task(task_id))
        return view or None

    async def task_view_and_position(
        self, task_id: str, lanes: Lanes | None = None
    ) -> tuple[dict[str, str] | None, int | None]:
        """The task view and its rank in the waiting set (with `lanes`, how many waiting tasks
        start before it: `events.lane_positions`), read in one MULTI/EXEC so they agree."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.task(task_id))
            pipe.zrank(self.keys.waiting, task_id)
            if lanes is not None:
                lane_reads.ask(pipe, self.keys, lanes, [task_id])
            view, rank, *more = await pipe.execute()
        if lanes is not None:
            (rank,) = await lane_reads.positions(self._r, self.keys, lanes, [task_id], more)
        return (view or None), rank

    async def task_log(self, task_id: str, archived: ArchivedEntries | None = None) -> list[dict[str, str]]:
        """The task's events, in stream order: its audit list holds their stream ids, read here
        from the stream in one round trip (an entry written before the list held ids is the
        event's JSON line itself). Entries trimmed from the stream come from `archived` (given
        their ids, their fields); without it they are left out."""
        raw: list[str] = await self._r.lrange(self.keys.task_log(task_id), 0, -1)
        ids = [r for r in raw if not r.startswith("{")]
        async with self._r.pipeline(transaction=False) as pipe:
            for stream_id in ids:
                pipe.xrange(self.keys.events, stream_id, stream_id)
            entries = dict(zip(ids, await pipe.execute(), strict=True))
        trimmed = [r for r in ids if not entries[r]]
        found = await archived(trimmed) if trimmed and archived is not None else {}
        for stream_id in trimmed:
            if stream_id in found:
                flat = found[stream_id]
                entries[stream_id] = [(stream_id, dict(zip(flat[::2], flat[1::2], strict=False)))]
        return [
            json.loads(r) if r.startswith("{") else _line(entries[r]) for r in raw if entries.get(r, True)
        ]

    async def watched(
        self, views: Sequence[str], ranks: Sequence[str], head: int, lanes: Lanes | None = None
    ) -> tuple[list[dict[str, str]], list[int | None], list[str], QueueCounts]:
        """One MULTI/EXEC for the SSE fan-out, so that all it reads agrees: the view of each task
        in `views`, the rank of each in `ranks` (with `lanes`, how many waiting tasks start
        before it), the first `head` waiting task ids (none for 0), and the queue's counts."""
        async with self._r.pipeline(transaction=True) as pipe:
            asked = 0 if lanes is None else lane_reads.ask(pipe, self.keys, lanes, ranks)
            for task_id in views:
                pipe.hgetall(self.keys.task(task_id))
            for task_id in ranks:
                pipe.zrank(self.keys.waiting, task_id)
            if head > 0:
                pipe.zrange(self.keys.waiting, 0, head - 1)
            pipe.zcard(self.keys.waiting)
            pipe.scard(self.keys.running)
            pipe.hgetall(self.keys.stats)
            replies: list[Any] = await pipe.execute()
        by_lane, replies = replies[:asked], replies[asked:]
        n, m = len(views), len(views) + len(ranks)
        waiting, running, stats = replies[-3:]
        counts = QueueCounts(int(waiting), int(running), {k: float(v) for k, v in stats.items()})
        ranked = replies[n:m]
        if lanes is not None:
            ranked = await lane_reads.positions(self._r, self.keys, lanes, ranks, by_lane)
        return replies[:n], ranked, (replies[m] if head > 0 else []), counts

    async def position(self, task_id: str, lanes: Lanes | None = None) -> int | None:
        """ZRANK in the waiting set; with `lanes`, how many waiting tasks start before it."""
        if lanes is None:
            rank: int | None = await self._r.zrank(self.keys.waiting, task_id)
            return rank
        (found,) = await self.positions([task_id], lanes)
        return found

    async def positions(self, task_ids: Sequence[str], lanes: Lanes | None = None) -> list[int | None]:
        """`position` of each task, in one MULTI/EXEC."""
        async with self._r.pipeline(transaction=True) as pipe:
            if lanes is None:
                for task_id in task_ids:
                    pipe.zrank(self.keys.waiting, task_id)
            else:
                lane_reads.ask(pipe, self.keys, lanes, task_ids)
            replies: list[Any] = await pipe.execute()
        if lanes is None:
            return replies
        return await lane_reads.positions(self._r, self.keys, lanes, task_ids, replies)

    async def waiting_by_lane(self, lanes: Lanes) -> dict[str, int]:
        """Each lane's waiting tasks ("" for those in no configured lane), in one MULTI/EXEC."""
        async with self._r.pipeline(transaction=True) as pipe:
            for name in lanes.names:
                pipe.zcard(self.keys.lane_waiting(name))
            pipe.zcard(self.keys.waiting)
            *cards, total = await pipe.execute()
        return lane_reads.waiting_by_lane(lanes, [int(n) for n in cards], int(total))

    async def counts(self) -> QueueCounts:
        """ZCARD, SCARD and the counters, in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.waiting)
            pipe.scard(self.keys.running)
            pipe.hgetall(self.keys.stats)
            waiting, running, stats = await pipe.execute()
        return QueueCounts(int(waiting), int(running), {k: float(v) for k, v in stats.items()})

    async def in_flight(self) -> tuple[int, int]:
        """(tasks holding a slot, tasks whose upstream call is in flight), read in one MULTI/EXEC
        so that the second is never more than the first."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.scard(self.keys.running)
            pipe.scard(self.keys.calls)
            held, calls = await pipe.execute()
        return int(held), int(calls)

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

    # -- The operator's views (`events.ops_models`): task-list index pages, the intake switch. --

    async def task_index_pages(
        self, indexes: Sequence[TaskIndex], before: tuple[float, str] | None, count: int
    ) -> list[list[tuple[str, float]]]:
        """For each index, its first `count` (task id, score) in the order (score, task id)
        descending that come after `before` (None: from the newest), in one MULTI/EXEC: a task
        that moves from one index to another is seen in one of them."""
        async with self._r.pipeline(transaction=True) as pipe:
            for index in indexes:
                key = index.key(self.keys)
                if before is None:
                    pipe.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)
                    continue
                score = repr(before[0])  # the shortest text that parses back to the same double
                pipe.zrangebyscore(key, score, score)  # ties at the cursor's score: ordered by id
                pipe.zrevrangebyscore(key, f"({score}", "-inf", start=0, num=count, withscores=True)
            replies: list[Any] = await pipe.execute()
        if before is None:
            return [[(m, float(s)) for m, s in reply] for reply in replies]
        pages = []
        for ties, lower in zip(replies[::2], replies[1::2], strict=True):
            tied = [(m, before[0]) for m in sorted(ties, reverse=True) if m < before[1]]
            pages.append((tied + [(m, float(s)) for m, s in lower])[:count])
        return pages

    async def task_views(
        self, task_ids: Sequence[str], lanes: Lanes | None = None
    ) -> tuple[list[dict[str, str]], list[int | None]]:
        """Each task's view ({} for none) and waiting-set rank (with `lanes`, how many waiting
        tasks start before it), in one MULTI/EXEC."""
        async with self._r.pipeline(transaction=True) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self.keys.task(task_id))
            if lanes is not None:
                lane_reads.ask(pipe, self.keys, lanes, task_ids)
            else:
                for task_id in task_ids:
                    pipe.zrank(self.keys.waiting, task_id)
            replies: list[Any] = await pipe.execute()
        views, rest = replies[: len(task_ids)], replies[len(task_ids) :]
        if lanes is not None:
            rest = await lane_reads.positions(self._r, self.keys, lanes, task_ids, rest)
        return views, rest

    async def intake(self) -> Intake:
        """The intake switch (open when it was never switched)."""
        fields: dict[str, str] = await self._r.hgetall(self.keys.intake)
        return Intake.of(fields)
