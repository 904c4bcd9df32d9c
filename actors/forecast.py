"""The forecast: when queued tasks start under slots and rolling-window pools, and the throughput bound.

Pure arithmetic; time is a parameter. Tasks start in queue order; each needs a slot, held
for its call, and a place in a pool's window. A sliding-window pool that granted at time g
can grant again one window (plus the key pool's margin) after g, so a place taken by a task
that starts at s comes back at s + window. The ETA, the capacity planner, the load test's
bound and a refused submit's Retry-After all come from here, so they cannot disagree.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

# A measured mean below this (calls that fail at once) must not make the slots unbounded.
MIN_LATENCY = 1e-3
# Before any call has been measured, the configured latency counts, but at least this.
MIN_CONFIGURED_LATENCY = 0.1
# Rates below this would make a Retry-After of days: a refused submit waits at most RETRY_CAP.
MIN_RATE = 1e-3
RETRY_CAP = 3600


def window_capacity(rpm: int, window: float) -> int:
    """Calls allowed in one window of `window` seconds at `rpm` requests per minute."""
    return max(1, int(rpm * window / 60 + 1e-9))


@dataclass(frozen=True, slots=True)
class PoolWindow:
    """A pool's places per window, the seconds before a place is reused (the window and the key
    pool's margin), the grants still inside its window, and when it may grant again
    (`available_from`: after a cooldown or parking; inf: never)."""

    capacity: int
    window: float
    grants: tuple[float, ...] = ()
    available_from: float = 0.0


def _places(pool: PoolWindow, now: float) -> list[float]:
    """When each of the pool's places is free: the budget left now, then each logged grant's
    place one window after it was made; none when the pool never grants again."""
    if math.isinf(pool.available_from):
        return []
    start = max(now, pool.available_from)
    recent = sorted(g for g in pool.grants if g > now - pool.window)[-pool.capacity :]
    free_now = [now] * (pool.capacity - len(recent))
    return [max(t, start) for t in free_now + [g + pool.window for g in recent]]


def token_times(pool: PoolWindow, now: float) -> Iterator[float]:
    """The times at which this pool can hand out its next tokens, in order, forever, if each
    token is used as soon as it is free."""
    places = _places(pool, now)
    heapq.heapify(places)
    while places:
        at = heapq.heappop(places)
        yield at
        heapq.heappush(places, at + pool.window)


def start_times(
    arrivals: Sequence[float],
    slot_free: Sequence[float],
    latency: float,
    pools: Sequence[PoolWindow],
    now: float = 0.0,
) -> list[float]:
    """When each task starts, in queue order (`arrivals` sorted): after it arrives, once a slot
    is free (`slot_free`: when each slot frees; a task holds its slot `latency` seconds) and a
    place in some pool's window is free (the place comes back one window after the start);
    inf when no pool will ever grant."""
    places = [(at, i) for i, pool in enumerate(pools) for at in _places(pool, now)]
    heapq.heapify(places)
    slots = list(slot_free)
    heapq.heapify(slots)
    starts = []
    for arrived in arrivals:
        ready = max(arrived, heapq.heappop(slots))
        if not places:
            starts.append(math.inf)
            heapq.heappush(slots, math.inf)
            continue
        free, i = heapq.heappop(places)
        start = max(ready, free)
        heapq.heappush(places, (start + pools[i].window, i))
        heapq.heappush(slots, start + latency)
        starts.append(start)
    return starts


def predict_starts(
    count: int, now: float, slots: int, running: int, latency: float, pools: Sequence[PoolWindow]
) -> list[float]:
    """Predicted start times of the next `count` tasks to start (queue positions 0 … count-1)."""
    if count <= 0:
        return []
    # Running calls are taken to be half done: their slots free after half a latency.
    busy = min(running, slots)
    slot_free = [now + latency / 2] * busy + [now] * max(0, slots - running)
    return start_times([now] * count, slot_free, latency, pools, now)


def eta_seconds(
    position: int, now: float, slots: int, running: int, latency: float, pools: Sequence[PoolWindow]
) -> float:
    """Seconds until the task at `position` (0: next to start) is expected to start."""
    return predict_starts(position + 1, now, slots, running, latency, pools)[-1] - now


def call_latency(stats: Mapping[str, float], configured: float) -> float:
    """The mean upstream call in seconds from the queue's counters (`elapsed_sum` over
    `elapsed_count`); before any call, the configured latency, at least MIN_CONFIGURED_LATENCY."""
    count = stats.get("elapsed_count", 0.0)
    return stats["elapsed_sum"] / count if count else max(configured, MIN_CONFIGURED_LATENCY)


def slot_hold(stats: Mapping[str, float], latency: float) -> float:
    """How long a task holds its slot: from dispatch to outcome (`held_sum` over `held_count`),
    which adds the token wait and the hand-offs around the call; at least `latency`."""
    held = stats.get("held_count", 0.0)
    return max(latency, stats["held_sum"] / held) if held else latency


def throughput_bound(slots: int, latency: float, rpm_total: float) -> float:
    """Tasks per second a configuration can sustain: min(slots / latency, ΣRPM / 60); slots do
    not bind calls that take no time."""
    slot_rate = slots / latency if latency > 0 else math.inf
    return min(slot_rate, rpm_total / 60.0)


def throughput(
    slots: int, stats: Mapping[str, float], configured_latency: float, rpms: Iterable[float]
) -> tuple[float, float]:
    """(tasks per second, mean call latency used for it) from the queue's counters and the
    rates of the pools that can serve."""
    latency = call_latency(stats, configured_latency)
    return throughput_bound(slots, max(latency, MIN_LATENCY), sum(rpms)), latency


def refusal_wait(reason: str, waiting: int, max_waiting: int, user_waiting: int, rate: float) -> int:
    """Seconds, 1 to RETRY_CAP, until a submit refused for a full backlog may be accepted.

    "queue_full": until the tasks over the limit have started; "user_waiting": one of the
    user's tasks starts about once per round of all `waiting` tasks.
    """
    rate = max(rate, MIN_RATE)
    if reason == "queue_full":
        wait = math.ceil(max(1, waiting - max_waiting + 1) / rate)
    else:
        wait = math.ceil(waiting / max(1, user_waiting) / rate)
    return min(RETRY_CAP, max(1, wait))


def makespan_at_rate(count: int, rate: float, latency: float, last_arrival: float = 0.0) -> float:
    """Seconds from the first arrival to the last finish when `count` tasks start at `rate` a
    second, none before the last arrives: the throughput bound on a makespan."""
    return max(count / rate, last_arrival) + latency
