"""Pure queue decisions: dispatch, lease expiry, retry or fail. Time and randomness are parameters."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from actors.config.lanes import next_lane
from actors.keypool.status import earliest_usable, pool_status
from actors.queue.state import QueueState
from events.catalogue import (
    QUEUED,
    RUNNING,
    CreditsRefunded,
    Event,
    StoredEvent,
    TaskCancelled,
    TaskDispatched,
    TaskExpired,
    TaskFailed,
    TaskLeaseExpired,
    TaskRetryScheduled,
    TaskSubmitted,
)
from events.store import Expect

# A round's dispatches go to one worker until it holds this many more attempts than the least
# loaded one, then to that one: a round of a few tasks costs one call, one outcome append and one
# send report, not one per worker, and a large round (a drain, a burst) is still spread.
ROUND_CHUNK = 8


@dataclass(frozen=True, slots=True)
class Policy:
    """The queue's rules, from config."""

    slots: int
    lease_seconds: float
    max_attempts: int
    workers: int
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    per_user_running: int = 0  # 0: no cap
    # Priority lanes (`actors.config.lanes`): their weights, and the slots kept for each alone.
    weights: Mapping[str, float] = field(default_factory=dict)
    reserved: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """Events to append together, and the task views they expect to find unchanged."""

    events: tuple[Event, ...]
    expect: Mapping[str, Expect] = field(default_factory=dict)


def backoff(attempt: int, base: float, cap: float, unit: float) -> float:
    """Full-jitter exponential backoff: `unit` in [0, 1) scales the ceiling for this attempt."""
    return unit * min(cap, base * 2.0 ** max(0, attempt - 1))


def _after_attempt(
    state: QueueState,
    task_id: str,
    attempt: int,
    retryable: bool,
    error: str,
    policy: Policy,
    now: float,
    rng: random.Random,
) -> list[Event]:
    entry = state.tasks[task_id]
    charged = entry.charged
    if expires(entry.deadline, entry.started, now):
        return expire(state, task_id, attempt, now)
    if retryable and charged < policy.max_attempts:
        delay = backoff(attempt, policy.backoff_base, policy.backoff_cap, rng.random())
        return [
            TaskRetryScheduled(
                task_id=task_id,
                attempt=attempt,
                not_before=now + delay,
                order=entry.order,
                lane=entry.lane,
                at=now,
            )
        ]
    reason = error if not retryable else f"gave up after {charged} attempts: {error}"
    failed = TaskFailed(
        task_id=task_id, attempt=attempt, error=reason, kind=entry.kind, lane=entry.lane, at=now
    )
    return [failed, *refund(state, task_id, "failed", now)]


def expires(deadline: float, started: bool, now: float) -> bool:
    """Whether a task with `deadline` (0: none) ends expired at `now`: none of its calls started."""
    return bool(deadline) and not started and deadline <= now


def expire(state: QueueState, task_id: str, attempt: int, now: float) -> list[Event]:
    """The end of a task whose deadline passed before any call of it started, with its refund."""
    entry = state.tasks[task_id]
    ended = TaskExpired(task_id=task_id, attempt=attempt, deadline=entry.deadline, lane=entry.lane, at=now)
    return [ended, *refund(state, task_id, "expired", now)]


def refund(state: QueueState, task_id: str, reason: str, now: float) -> list[Event]:
    """The refund of a task that ends without an image: its whole charge, in the same append
    as the event that ends it, so it happens exactly once."""
    entry = state.tasks[task_id]
    if not entry.price:
        return []
    return [
        CreditsRefunded(user_id=entry.user_id, task_id=task_id, amount=entry.price, reason=reason, at=now)
    ]


def cancel(
    state: QueueState, task_id: str, now: float, reason: str = "cancelled by the caller"
) -> Decision | str:
    """The cancellation of a waiting task and its refund; or why not: "running" or "ended"."""
    entry = state.tasks.get(task_id)
    if entry is None:
        return "ended"
    if not state.is_waiting(task_id):
        return "running"
    events = (
        TaskCancelled(task_id=task_id, reason=reason, lane=entry.lane, at=now),
        *refund(state, task_id, "cancelled", now),
    )
    return Decision(events, {task_id: Expect(QUEUED, entry.attempts)})


def pools_usable_at(state: QueueState, pools: Sequence[tuple[str, Mapping[str, str]]], now: float) -> float:
    """The earliest time at or after `now` when some pool may serve a call; inf when none ever will.

    `pools` gives each pool's name and its keys (key id -> hint). A pool serves once its
    daily quota is back and while one of its keys is not disabled (`pool_status`).
    """
    return earliest_usable(
        [
            pool_status(name, hints, state.disabled, state.parked.get(name, 0.0), 0.0, now)
            for name, hints in pools
        ]
    )


def decide(
    state: QueueState, policy: Policy, now: float, rng: random.Random, usable_at: float = 0.0
) -> list[Decision]:
    """Everything the queue should do at `now`; an empty list when there is nothing to do.

    Nothing is dispatched before `usable_at`, when no pool can serve a call (every pool
    parked or all its keys disabled): the tasks keep their places instead of holding slots.
    """
    decisions: list[Decision] = []
    batch: list[Event] = []
    # Each dispatched task must still be waiting at its attempt count when the batch is
    # written, so the same attempt can never be dispatched twice.
    guards: dict[str, Expect] = {}
    for task_id, ended in state.to_decide.items():
        batch += _after_attempt(state, task_id, ended.attempt, ended.retryable, ended.error, policy, now, rng)
    for task_id, lease in state.running.items():
        if lease.deadline <= now:
            expired = TaskLeaseExpired(task_id=task_id, attempt=lease.attempt, at=now)
            follow = _after_attempt(state, task_id, lease.attempt, True, "lease expired", policy, now, rng)
            decisions.append(Decision((expired, *follow), {task_id: Expect(RUNNING, lease.attempt)}))
    # Every waiting task past its deadline, in one append (one round trip however many expire
    # at once), each guarded as still waiting. A dispatched task's worker expires it if its
    # token does not come in time.
    expiring: dict[str, Expect] = {}
    ends: list[Event] = []
    for task_id in state.due(now):
        entry = state.tasks[task_id]
        if state.is_waiting(task_id):
            expiring[task_id] = Expect(QUEUED, entry.attempts)
            ends += expire(state, task_id, entry.attempts, now)
    if ends:
        decisions.append(Decision(tuple(ends), expiring))
    free = policy.slots - len(state.running)
    if free > 0 and state.waiting and usable_at <= now:
        load = [0] * policy.workers
        for lease in state.running.values():
            if 0 <= lease.worker < policy.workers:
                load[lease.worker] += 1
        per_user = state.running_per_user() if policy.per_user_running else {}
        used = state.lane_used() if policy.weights else {}
        shut: set[str] = set()  # lanes that may take no more slots in this round
        worker = -1  # the worker this round's dispatches go to (`ROUND_CHUNK`)
        for task_id in _by_lane(state, policy, used, shut) if policy.weights else state.waiting_order():
            if free == 0:
                break
            if state.not_before.get(task_id, 0.0) > now or task_id in expiring:
                continue
            entry = state.tasks[task_id]
            if policy.weights:
                if free <= _kept(policy.reserved, used, entry.lane):
                    shut.add(entry.lane)  # the free slots left are kept for other lanes
                    continue
                used[entry.lane] = used.get(entry.lane, 0) + 1
            if policy.per_user_running:
                if per_user.get(entry.user_id, 0) >= policy.per_user_running:
                    continue
                per_user[entry.user_id] = per_user.get(entry.user_id, 0) + 1
            if worker < 0 or load[worker] >= min(load) + ROUND_CHUNK:
                worker = min(range(policy.workers), key=load.__getitem__)
            load[worker] += 1
            free -= 1
            guards[task_id] = Expect(QUEUED, entry.attempts)
            batch.append(
                TaskDispatched(
                    task_id=task_id,
                    attempt=entry.attempts + 1,
                    worker=worker,
                    lease_deadline=now + policy.lease_seconds,
                    order=entry.order,
                    lane=entry.lane,
                    at=now,
                )
            )
    if batch:
        decisions.insert(0, Decision(tuple(batch), guards))
    return decisions


def _kept(reserved: Mapping[str, int], used: Mapping[str, int], lane: str) -> int:
    """The free slots that `lane` may not take: the other lanes' reserved slots they do not use."""
    return sum(max(0, n - used.get(other, 0)) for other, n in reserved.items() if other != lane)


def _by_lane(state: QueueState, policy: Policy, used: dict[str, int], shut: set[str]) -> Iterator[str]:
    """The waiting tasks interleaved across lanes by weight: next, the head of the lane with the
    fewest slots held per unit of weight (`used`, which the caller counts up as it dispatches),
    so each lane with tasks waiting gets its weight's share of the slots; inside a lane, the
    queue's fair order. A lane with nothing waiting lends its share until its tasks come; a
    lane the caller `shut` yields no more."""
    heads: dict[str, tuple[float, int, str]] = {}
    rest: dict[str, Iterator[tuple[float, int, str]]] = {}
    for lane, places in state.lanes.items():
        rest[lane] = iter(places)
        if (head := next(rest[lane], None)) is not None:
            heads[lane] = head
    while heads:
        lane = next_lane(policy.weights, used, heads)
        if lane not in shut:
            yield heads[lane][2]
        if lane in shut or (head := next(rest[lane], None)) is None:
            del heads[lane]
        else:
            heads[lane] = head


def recalls(state: QueueState, policy: Policy, now: float) -> list[tuple[str, int]]:
    """The slots to take back for lanes below their share: (task id, attempt) of holders whose
    call has not started, newest first, from the lanes holding most above their share.

    A lane lends the slots it does not need; when its tasks come and every slot is held, the
    slots are freed only as calls end, and the holders of a lending lane may wait a long time
    for tokens that now go to the lane that came back (the key pool's virtual time). So, while a
    lane with tasks ready to start holds fewer slots than its share (its weight's, or its
    reserve), as many slots are taken back from lanes above theirs, never one whose call began:
    the key pool refuses those still waiting for a token (`KeyPool.withdraw`), and they go back
    to their places having made no call. Slots free now are given first; nothing without lanes.
    """
    if not policy.weights:
        return []
    held = state.lane_used()
    ready = {lane: len(places) for lane, places in state.lanes.items()}
    for task_id, until in state.not_before.items():  # few: the tasks in a retry's backoff
        if until > now and (entry := state.tasks.get(task_id)) is not None and state.is_waiting(task_id):
            ready[entry.lane] -= 1
    active = {lane for lane, n in {**held, **ready}.items() if n}
    total = sum(policy.weights.get(lane, 1.0) for lane in active)
    share = {
        lane: max(policy.slots * policy.weights.get(lane, 1.0) / total, policy.reserved.get(lane, 0))
        for lane in active
    }
    short = sum(
        min(ready.get(lane, 0), max(0, math.floor(share[lane]) - held.get(lane, 0))) for lane in active
    )
    short -= max(0, policy.slots - len(state.running))
    taken: list[tuple[str, int]] = []
    for lane in sorted(active, key=lambda m: held.get(m, 0) / policy.weights.get(m, 1.0), reverse=True):
        over = held.get(lane, 0) - math.ceil(share[lane])
        if short - len(taken) <= 0 or over <= 0:
            continue
        mine = sorted(
            (
                (lease.since, t, lease.attempt)
                for t, lease in state.running.items()
                if (e := state.tasks.get(t)) is not None and e.lane == lane and not e.started
            ),
            reverse=True,
        )
        taken += [(t, attempt) for _, t, attempt in mine[: min(over, short - len(taken))]]
    return taken


def dispatch_only(decisions: list[Decision], granted: int) -> list[Decision]:
    """`decisions` (from `decide`) keeping only the first `granted` dispatches of the first one,
    those the key pool gave tokens to (it grants in queue order, so a prefix); the others stay
    waiting in their places, and a decision left with no event is dropped."""
    if not decisions:
        return decisions
    first = decisions[0]
    wanted = [e.task_id for e in first.events if isinstance(e, TaskDispatched)]
    dropped = set(wanted[granted:])
    events = tuple(e for e in first.events if not isinstance(e, TaskDispatched) or e.task_id not in dropped)
    expect = {t: want for t, want in first.expect.items() if t not in dropped}
    return [Decision(events, expect), *decisions[1:]] if events else decisions[1:]


def next_wakeup(state: QueueState, usable_at: float = 0.0, now: float = 0.0) -> float | None:
    """The earliest time a decision may change without a new event: a lease deadline, a retry
    not yet due at `now`, a task's deadline, or a pool coming back.

    A retry already due changes nothing by itself: it waits for a slot, and a slot frees with
    an event (a step woken for it would find nothing to do, every millisecond until then)."""
    times = [lease.deadline for lease in state.running.values()]
    times += [at for at in state.not_before.values() if at > now]
    for deadline, task_id in state.deadlines:
        # The first waiting one: a dispatched task's deadline is its worker's to keep.
        if state.is_waiting(task_id):
            times.append(deadline)
            break
    if state.waiting and math.isfinite(usable_at) and usable_at > 0:
        times.append(usable_at)
    return min(times) if times else None


def gathers(state: QueueState, batch: Sequence[StoredEvent], full: bool) -> bool:
    """Whether to wait for more events before deciding on `batch` (`[queue] gather_ms`): it
    brings submits while nothing waits, and it is not a `full` read. A waiting task (one a freed
    slot can take) is dispatched at once, and a backlog needs no gathering."""
    if not batch or full or state.waiting:
        return False
    return any(isinstance(stored.event, TaskSubmitted) for stored in batch)
