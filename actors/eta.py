"""When a waiting task will start: a small simulation of what the queue really does.

Pure arithmetic on `now`. Tasks start in queue order; each needs a slot (held from
dispatch until its call ends) and a rate-limit token. A sliding-window pool that granted
at time g can grant again at g + window, so from the grants of the current window every
future token time follows: the budget left is free now, then each logged grant returns
one window after it was made, and every token used returns one window after its use.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolWindow:
    """A pool's limit, the times of the grants still inside its window, and when it may grant
    again (`available_from`: after a cooldown or parking; inf: never)."""

    capacity: int
    window: float
    grants: tuple[float, ...]
    available_from: float = 0.0


def token_times(pool: PoolWindow, now: float) -> Iterator[float]:
    """The times at which this pool can hand out its next tokens, in order, forever."""
    if math.isinf(pool.available_from):
        return
    start = max(now, pool.available_from)
    recent = sorted(g for g in pool.grants if g > now - pool.window)[-pool.capacity :]
    free_now = pool.capacity - len(recent)
    cycle = [now] * free_now + [g + pool.window for g in recent]
    while True:
        for t in cycle:
            yield max(t, start)
        cycle = [max(t, start) + pool.window for t in cycle]


def predict_starts(
    count: int, now: float, slots: int, running: int, latency: float, pools: Sequence[PoolWindow]
) -> list[float]:
    """Predicted start times of the next `count` tasks to start (queue positions 0 … count-1)."""
    if count <= 0:
        return []
    tokens = heapq.merge(*(token_times(p, now) for p in pools))
    never = math.inf
    # Running calls are taken to be half done: their slots free after half a latency.
    slot_free = [now + latency / 2] * min(running, slots) + [now] * max(0, slots - running)
    heapq.heapify(slot_free)
    starts = []
    for _ in range(count):
        dispatched = heapq.heappop(slot_free)
        start = max(dispatched, next(tokens, never))
        starts.append(start)
        heapq.heappush(slot_free, start + latency)
    return starts


def eta_seconds(
    position: int, now: float, slots: int, running: int, latency: float, pools: Sequence[PoolWindow]
) -> float:
    """Seconds until the task at `position` (0: next to start) is expected to start."""
    return predict_starts(position + 1, now, slots, running, latency, pools)[-1] - now
