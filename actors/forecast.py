"""The forecast: when queued tasks start under slots and rolling-window pools, and the throughput bound.

Pure arithmetic; time is a parameter. Tasks start in queue order; each needs a slot, held
for its call, and a place in a pool's window. A sliding-window pool that granted at time g
can grant again one window (plus the key pool's margin) after g, so a place taken by a task
that starts at s comes back at s + window. The ETA, the capacity planner, the load test's
bound and a refused submit's Retry-After all come from here, so they cannot disagree.

`start_table` gives the same starts as `predict_starts` for every queue position at once,
computed over groups of places and slots that free together (its cost follows the number of
distinct times, never a pool's capacity) and, where the schedule repeats, closed beyond its
end by that period: an ETA is then one lookup whatever the position.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

# A measured mean below this (calls failing at once) must not make the slots unbounded.
MIN_LATENCY = 1e-3
# Before any call has been measured, the configured latency counts, but at least this.
MIN_CONFIGURED_LATENCY = 0.1
# Until a call is measured, a gemini call is taken to last this long (1K images: 5 to 15 s).
GEMINI_CALL_SECONDS = 10.0
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


def held_until(
    now: float, slots: int, running: int, latency: float, busy: Sequence[float] | None
) -> list[float]:
    """When each slot frees: `busy` gives the held ones' times (at most `slots`, none before
    `now`); without it, `running` held slots taken to be half way through a call."""
    if busy is None:
        busy = [now + latency / 2] * min(running, slots)
    held = sorted(max(now, t) for t in busy)[:slots]
    return held + [now] * (slots - len(held))


def predict_starts(
    count: int,
    now: float,
    slots: int,
    running: int,
    latency: float,
    pools: Sequence[PoolWindow],
    busy: Sequence[float] | None = None,
) -> list[float]:
    """Predicted start times of the next `count` tasks to start (queue positions 0 … count-1);
    `busy` as `held_until` takes it."""
    if count <= 0:
        return []
    slot_free = held_until(now, slots, running, latency, busy)
    return start_times([now] * count, slot_free, latency, pools, now)


def eta_seconds(
    position: int,
    now: float,
    slots: int,
    running: int,
    latency: float,
    pools: Sequence[PoolWindow],
    busy: Sequence[float] | None = None,
) -> float:
    """Seconds until the task at `position` (0: next to start) is expected to start."""
    return predict_starts(position + 1, now, slots, running, latency, pools, busy)[-1] - now


# A start table simulates at most this many groups, and compares states (to find the period)
# of at most STATE_GROUPS groups, keeping at most STATES of them: together they bound a
# table's time and memory, whatever the positions asked and the pools' capacity.
TABLE_STEPS = 8192
STATE_GROUPS = 48
STATES = 512
# A pool's logged grants count as at most this many groups, each place free at the end of its
# 1/GRANT_GROUPS of the window (a 60 s window: 59 ms late at most, below the ETA's rounding).
GRANT_GROUPS = 1024
# Offsets (seconds after the table's `now`) closer than this count as equal when states compare.
_QUANTUM = 1e-6


@dataclass(frozen=True, slots=True)
class StartTable:
    """Predicted starts by queue position, as `predict_starts` gives them, in seconds after `now`.

    Runs of positions start together: run i starts `offsets[i]` after `now` from position
    `firsts[i]` on; the runs cover positions below `end`. Beyond `end`: when the schedule
    repeats (from position `period_from` on, `period` positions later every task starts
    `period_seconds` later) the repeat, exactly; otherwise (pools of different windows, or a
    state too large to compare) one start every 1/`rate` seconds after the last: the
    throughput bound, an estimate within a window or two of the simulation. A lookup is one
    bisection over at most TABLE_STEPS runs, whatever the position.
    """

    now: float
    firsts: tuple[int, ...]
    offsets: tuple[float, ...]
    end: int
    period_from: int = 0
    period: int = 0
    period_seconds: float = 0.0
    rate: float = 0.0

    def offset(self, position: int) -> float:
        """Seconds after `now` when the task at `position` (0: next to start) starts; inf: never."""
        if position < self.end:
            return self.offsets[bisect_right(self.firsts, max(0, position)) - 1]
        if self.period:
            shifts = (position - self.period_from) // self.period
            return self.offset(position - shifts * self.period) + shifts * self.period_seconds
        if self.rate <= 0:
            return math.inf
        return self.offsets[-1] + (position - self.end + 1) / self.rate

    def eta(self, position: int, now: float) -> float:
        """Seconds from `now` until the task at `position` starts (negative once due; inf: never)."""
        return self.now + self.offset(position) - now


class _Groups:
    """A multiset of (time, pool) pairs: a heap of the distinct pairs and a count of each."""

    __slots__ = ("counts", "heap")

    def __init__(self) -> None:
        self.counts: dict[tuple[float, int], int] = {}
        self.heap: list[tuple[float, int]] = []

    def add(self, key: tuple[float, int], n: int) -> None:
        if n <= 0:
            return
        if key in self.counts:
            self.counts[key] += n
        else:
            self.counts[key] = n
            heapq.heappush(self.heap, key)

    def take(self, n: int) -> None:
        """Remove `n` of the smallest pair (which holds at least `n`)."""
        key = self.heap[0]
        left = self.counts[key] - n
        if left:
            self.counts[key] = left
        else:
            del self.counts[key]
            heapq.heappop(self.heap)

    def settle(self, front: float) -> None:
        """Count everything free by `front` as free at `front` (one pool key only).

        Starts never go back in time, so the next start is at least `front`, and a slot or a
        place free earlier gives the same starts as one free at `front`.
        """
        n = 0
        while self.heap and self.heap[0][0] <= front:
            n += self.counts.pop(heapq.heappop(self.heap))
        self.add((front, 0), n)


def _state(front: float, slots: _Groups, places: _Groups) -> tuple[object, ...] | None:
    """What decides every later start, relative to the last start `front` (None when too large
    to compare): slots free by then are alike; places free by then matter only in the order
    they are taken (their pools); later ones by their offsets."""
    if len(slots.counts) + len(places.counts) > STATE_GROUPS:
        return None
    idle_slots = 0
    later_slots = []
    for (t, _), n in sorted(slots.counts.items()):
        if t > front:
            later_slots.append((round((t - front) / _QUANTUM), n))
        else:
            idle_slots += n
    idle: list[tuple[int, int]] = []
    later: list[tuple[int, int, int]] = []
    for (t, pool), n in sorted(places.counts.items()):
        if t > front:
            later.append((round((t - front) / _QUANTUM), pool, n))
        elif idle and idle[-1][0] == pool:
            idle[-1] = (pool, idle[-1][1] + n)
        else:
            idle.append((pool, n))
    return idle_slots, tuple(later_slots), tuple(idle), tuple(later)


def _add_places(places: _Groups, pool: PoolWindow, now: float, key: int) -> None:
    """The pool's places as `_places` gives them, as offsets from `now`, grouped by time: one
    group for the budget left, one per logged grant, or one per 1/GRANT_GROUPS of the window
    when more grants are logged (each place then counts as free at the end of its part)."""
    opens = max(0.0, pool.available_from - now)
    grants = sorted(pool.grants)
    first = max(bisect_right(grants, now - pool.window), len(grants) - pool.capacity)
    places.add((opens, key), pool.capacity - (len(grants) - first))
    if len(grants) - first <= GRANT_GROUPS:
        for g in grants[first:]:
            places.add((max(g - now + pool.window, opens), key), 1)
        return
    width = pool.window / GRANT_GROUPS
    for part in range(1, GRANT_GROUPS + 1):
        edge = now - pool.window + part * width
        upto = bisect_right(grants, edge, first) if part < GRANT_GROUPS else len(grants)
        places.add((max(part * width, opens), key), upto - first)
        first = upto


def start_table(
    now: float,
    slots: int,
    running: int,
    latency: float,
    pools: Sequence[PoolWindow],
    horizon: int = 1 << 62,
    max_steps: int = TABLE_STEPS,
    busy: Sequence[float] | None = None,
) -> StartTable:
    """The starts `predict_starts(count, now, slots, running, latency, pools, busy)` gives, for
    every position at once, simulated group by group: the tasks that take slots and one pool's
    places free at the same time start together. It stops when the state repeats (the
    period), when `horizon` positions are covered, or after `max_steps` groups.

    Times are kept as offsets from `now`, exact to far below a millisecond.
    """
    serving = [(i, p) for i, p in enumerate(pools) if not math.isinf(p.available_from)]
    rate = throughput_bound(slots, latency, sum(60.0 * p.capacity / p.window for _, p in serving))
    if slots < 1 or not serving:
        return StartTable(now, (0,), (math.inf,), 1)
    # With one window for every pool, which pool a place belongs to changes nothing: one key.
    same = len({p.window for _, p in serving}) == 1
    windows = {(0 if same else i): p.window for i, p in serving}
    free, places = _Groups(), _Groups()
    for at in held_until(now, slots, running, latency, busy):
        free.add((at - now, 0), 1)
    for i, pool in serving:
        _add_places(places, pool, now, 0 if same else i)
    firsts: list[int] = []
    offsets: list[float] = []
    seen: dict[tuple[object, ...], tuple[int, float]] = {}
    position = 0
    for _ in range(max_steps):
        slot, place = free.heap[0], places.heap[0]
        n = min(free.counts[slot], places.counts[place])
        start = max(slot[0], place[0])
        if not offsets or offsets[-1] != start:
            firsts.append(position)
            offsets.append(start)
        position += n
        free.take(n)
        places.take(n)
        free.add((start + latency, 0), n)
        places.add((start + windows[place[1]], place[1]), n)
        if position >= horizon:
            break
        free.settle(start)
        if same:
            places.settle(start)
        state = _state(start, free, places) if len(seen) < STATES else None
        if state is None:
            continue
        if state in seen:
            since, at = seen[state]
            return StartTable(
                now, tuple(firsts), tuple(offsets), position, since, position - since, start - at
            )
        if len(seen) < STATES:
            seen[state] = (position, start)
    return StartTable(now, tuple(firsts), tuple(offsets), position, rate=rate)


def prior_latency(provider: str, latency: float, timeout: float, expected: float = 0.0) -> float:
    """The call time assumed until one is measured, at least MIN_CONFIGURED_LATENCY: `expected`
    (`[provider] expected_call_seconds`) or an upstream's GEMINI_CALL_SECONDS, at most the
    timeout; else the offline provider's `latency`."""
    if provider == "offline" and not expected:
        return max(latency, MIN_CONFIGURED_LATENCY)
    return min(max(expected or GEMINI_CALL_SECONDS, MIN_CONFIGURED_LATENCY), timeout)


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
