"""The reads behind an ETA: the slot holders and the pools' windows in one transaction, and the
newest calls' times from the stream."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from events.errors import StoreUnavailableError
from events.redis_store import UNAVAILABLE, RedisEventStore

# The task-view fields that say how far a slot holder's current attempt got.
HOLDER_FIELDS = ("attempts", "dispatched_at", "started_at", "call", "call_attempt", "lane")


@dataclass(frozen=True, slots=True)
class Holder:
    """A task holding a slot, as its view shows it (fields absent from the view are "")."""

    task_id: str
    fields: Mapping[str, str]

    @property
    def member(self) -> str:
        """Its current attempt's name in a pool's grants (`<task id>:<attempt>`)."""
        return f"{self.task_id}:{self.fields.get('attempts') or '0'}"

    def time(self, name: str) -> float:
        """A time field of its view (0: none)."""
        value = self.fields.get(name)
        return float(value) if value else 0.0


@dataclass(frozen=True, slots=True)
class QueueReads:
    """The queue as one transaction saw it, with the slot holders' views read just after.

    `waiting`: the tasks in the waiting set; `grants`: each pool's grants of its window as
    (`<task id>:<attempt>`, time), oldest first; `states`: each pool's read model.
    """

    holders: tuple[Holder, ...]
    stats: Mapping[str, float]
    waiting: int
    grants: Mapping[str, list[tuple[str, float]]]
    states: Mapping[str, dict[str, str]]


async def read_queue(
    store: RedisEventStore, since: Mapping[str, float], newest: Mapping[str, int]
) -> QueueReads:
    """The running set, the counters, the waiting tasks, each pool's grants after `since[pool]` (the newest
    `newest[pool]`) and its state in one MULTI/EXEC; then the views of the tasks in the set."""
    r: Any = store._r
    keys = store.keys
    try:
        async with r.pipeline(transaction=True) as pipe:
            pipe.smembers(keys.running)
            pipe.hgetall(keys.stats)
            pipe.zcard(keys.waiting)
            for pool, t in since.items():
                pipe.zrevrangebyscore(
                    keys.grants(pool), "+inf", f"({t}", withscores=True, start=0, num=newest[pool]
                )
            for pool in since:
                pipe.hgetall(keys.pool(pool))
            replies: list[Any] = await pipe.execute()
        running = sorted(replies[0])
        async with r.pipeline(transaction=False) as pipe:
            for task_id in running:
                pipe.hmget(keys.task(task_id), HOLDER_FIELDS)
            views: list[list[str | None]] = await pipe.execute() if running else []
    except UNAVAILABLE as exc:
        raise StoreUnavailableError(str(exc)) from exc
    n = len(since)
    grants = {
        pool: [(str(m), float(s)) for m, s in reversed(reply)]
        for pool, reply in zip(since, replies[3 : 3 + n], strict=True)
    }
    states = {pool: dict(reply) for pool, reply in zip(since, replies[3 + n :], strict=True)}
    holders = tuple(
        Holder(task_id, {k: v for k, v in zip(HOLDER_FIELDS, values, strict=True) if v is not None})
        for task_id, values in zip(running, views, strict=True)
    )
    stats = {k: float(v) for k, v in replies[1].items()}
    return QueueReads(holders, stats, int(replies[2]), grants, states)


@dataclass(frozen=True, slots=True)
class Recent:
    """What the newest events say about pace: the succeeded calls' times (`elapsed`), the time
    their slots were held besides (`held` less `elapsed`, where known), and each pool's grants
    (times, oldest first) with the capacity each was made at."""

    call_times: list[float]
    held_beyond: list[float]
    grants: dict[str, list[tuple[float, int]]]


async def recent_events(store: RedisEventStore, entries: int) -> Recent:
    """The call times and grants among the newest `entries` events."""
    r: Any = store._r
    try:
        raw: Sequence[tuple[str, dict[str, str]]] = await r.xrevrange(store.keys.events, count=entries)
    except UNAVAILABLE as exc:
        raise StoreUnavailableError(str(exc)) from exc
    times: list[float] = []
    beyond: list[float] = []
    grants: dict[str, list[tuple[float, int]]] = {}
    for _, fields in reversed(raw):
        kind = fields.get("type")
        if kind not in ("task.succeeded", "key.token_granted"):
            continue
        data = json.loads(fields.get("data") or "{}")
        if kind == "task.succeeded" and isinstance(data.get("elapsed"), int | float):
            times.append(max(0.0, float(data["elapsed"])))
            if data.get("held"):
                beyond.append(max(0.0, float(data["held"]) - times[-1]))
        elif kind == "key.token_granted":
            grants.setdefault(str(data.get("pool")), []).append(
                (float(data.get("at", 0.0)), int(data.get("capacity", 0)))
            )
    return Recent(times, beyond, grants)
