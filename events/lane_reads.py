"""Positions among priority lanes (`events.lane_positions`) read from the per-lane waiting sets.

`ask` queues, on a pipeline that may already hold other reads (one MULTI/EXEC), each lane's
count of waiting tasks and each task's score in the waiting set and rank in each lane;
`positions` turns the replies into tasks-before counts. A task in no configured lane (REST:
an older task) has its rank among those counted in one more round trip, only then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from events.keys import Keys
from events.lane_positions import REST, Lanes, tasks_before


def ask(pipe: Any, keys: Keys, lanes: Lanes, task_ids: Sequence[str]) -> int:
    """Queue the reads on `pipe`; how many replies they make."""
    for name in lanes.names:
        pipe.zcard(keys.lane_waiting(name))
    pipe.zcard(keys.waiting)
    for task_id in task_ids:
        pipe.zscore(keys.waiting, task_id)
        for name in lanes.names:
            pipe.zrank(keys.lane_waiting(name), task_id)
    return len(lanes.names) + 1 + len(task_ids) * (len(lanes.names) + 1)


def waiting_by_lane(lanes: Lanes, cards: Sequence[int], total: int) -> dict[str, int]:
    """Each lane's waiting tasks, REST for those in no configured lane."""
    waiting = dict(zip(lanes.names, cards, strict=True))
    waiting[REST] = max(0, total - sum(cards))
    return waiting


async def positions(
    r: Any, keys: Keys, lanes: Lanes, task_ids: Sequence[str], replies: Sequence[Any]
) -> list[int | None]:
    """The tasks-before count of each task (None: not waiting), from the replies of `ask`."""
    k = len(lanes.names)
    waiting = waiting_by_lane(lanes, [int(n) for n in replies[:k]], int(replies[k]))
    out: list[int | None] = []
    rest: dict[int, float] = {}
    for i in range(len(task_ids)):
        score, *ranks = replies[k + 1 + i * (k + 1) : k + 1 + (i + 1) * (k + 1)]
        found = [(name, int(rank)) for name, rank in zip(lanes.names, ranks, strict=True) if rank is not None]
        if score is None:
            out.append(None)
        elif found:
            out.append(tasks_before(*found[0], waiting, lanes))
        else:
            rest[i] = float(score)
            out.append(None)
    if rest:
        ranked = await _rest_ranks(r, keys, lanes, [(task_ids[i], s) for i, s in rest.items()])
        for i, rank in zip(rest, ranked, strict=True):
            out[i] = None if rank is None else tasks_before(REST, rank, waiting, lanes)
    return out


async def _rest_ranks(
    r: Any, keys: Keys, lanes: Lanes, tasks: Sequence[tuple[str, float]]
) -> list[int | None]:
    """The rank among the REST tasks of each (task id, score): its rank in the waiting set less
    the tasks of configured lanes scored before it, in one MULTI/EXEC."""
    async with r.pipeline(transaction=True) as pipe:
        for task_id, score in tasks:
            pipe.zrank(keys.waiting, task_id)
            for name in lanes.names:
                pipe.zcount(keys.lane_waiting(name), "-inf", f"({score!r}")
        replies: list[Any] = await pipe.execute()
    step = len(lanes.names) + 1
    out: list[int | None] = []
    for i in range(len(tasks)):
        rank, *ahead = replies[i * step : (i + 1) * step]
        out.append(None if rank is None else max(0, int(rank) - sum(int(n) for n in ahead)))
    return out


def position_in(
    zsets: Mapping[str, Mapping[str, float]], keys: Keys, lanes: Lanes, task_id: str
) -> int | None:
    """The same figure from sorted sets held as {member: score} (the in-memory store)."""
    everyone = zsets.get(keys.waiting, {})
    if task_id not in everyone:
        return None
    cards = [len(zsets.get(keys.lane_waiting(name), {})) for name in lanes.names]
    waiting = waiting_by_lane(lanes, cards, len(everyone))
    for name in lanes.names:
        members = zsets.get(keys.lane_waiting(name), {})
        if task_id in members:
            ranked = sorted(members, key=lambda m: (members[m], m))
            return tasks_before(name, ranked.index(task_id), waiting, lanes)
    score = everyone[task_id]
    rank = sorted(everyone, key=lambda m: (everyone[m], m)).index(task_id)
    ahead = sum(
        1 for name in lanes.names for s in zsets.get(keys.lane_waiting(name), {}).values() if s < score
    )
    return tasks_before(REST, max(0, rank - ahead), waiting, lanes)
