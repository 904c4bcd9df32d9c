"""Pure queue decisions: dispatch, lease expiry, retry or fail. Time and randomness are parameters."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from actors.keypool.status import earliest_usable, pool_status
from actors.queue.state import QueueState
from events.catalogue import (
    QUEUED,
    RUNNING,
    CreditsRefunded,
    Event,
    TaskCancelled,
    TaskDispatched,
    TaskFailed,
    TaskLeaseExpired,
    TaskRetryScheduled,
)
from events.store import Expect


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
    if retryable and charged < policy.max_attempts:
        delay = backoff(attempt, policy.backoff_base, policy.backoff_cap, rng.random())
        return [
            TaskRetryScheduled(
                task_id=task_id,
                attempt=attempt,
                not_before=now + delay,
                order=entry.order,
                at=now,
            )
        ]
    reason = error if not retryable else f"gave up after {charged} attempts: {error}"
    failed = TaskFailed(task_id=task_id, attempt=attempt, error=reason, kind=entry.kind, at=now)
    return [failed, *refund(state, task_id, "failed", now)]


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
        TaskCancelled(task_id=task_id, reason=reason, at=now),
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
    free = policy.slots - len(state.running)
    if free > 0 and state.waiting and usable_at <= now:
        load = [0] * policy.workers
        for lease in state.running.values():
            if 0 <= lease.worker < policy.workers:
                load[lease.worker] += 1
        per_user = state.running_per_user() if policy.per_user_running else {}
        for task_id in state.waiting_order():
            if free == 0:
                break
            if state.not_before.get(task_id, 0.0) > now:
                continue
            entry = state.tasks[task_id]
            if policy.per_user_running:
                if per_user.get(entry.user_id, 0) >= policy.per_user_running:
                    continue
                per_user[entry.user_id] = per_user.get(entry.user_id, 0) + 1
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
                    at=now,
                )
            )
    if batch:
        decisions.insert(0, Decision(tuple(batch), guards))
    return decisions


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


def next_wakeup(state: QueueState, usable_at: float = 0.0) -> float | None:
    """The earliest time a decision may change without a new event: a lease deadline, a retry,
    or a pool coming back."""
    times = [lease.deadline for lease in state.running.values()]
    times += list(state.not_before.values())
    if state.waiting and math.isfinite(usable_at) and usable_at > 0:
        times.append(usable_at)
    return min(times) if times else None
