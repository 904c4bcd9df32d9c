"""The queue's side of upstream quotas: a 429 keeps the task's place and its retry budget;
no dispatch while every pool is parked or keyless; alerts for parked pools, disabled keys, retired models."""

from __future__ import annotations

import math
import random

from actors.config import AlertsConfig
from actors.queue.alerts import evaluate
from actors.queue.decide import Policy, decide, next_wakeup, pools_usable_at
from actors.queue.state import QueueState, apply, restore, snapshot
from events.catalogue import (
    AlertRaised,
    AlertResolved,
    Event,
    KeyDisabled,
    KeyParked,
    StoredEvent,
    TaskAttemptFailed,
    TaskDispatched,
    TaskFailed,
    TaskSucceeded,
    TaskUpstreamThrottled,
)
from tests.helpers import submitted

POLICY = Policy(slots=1, lease_seconds=100.0, max_attempts=2, workers=1, backoff_base=0.0)


def fold(state: QueueState, events: list[Event] | tuple[Event, ...]) -> None:
    for e in events:
        apply(state, StoredEvent(f"1-{int(state.last_id.split('-')[1]) + 1}", e))


def settle(state: QueueState, now: float, usable_at: float = 0.0) -> list[Event]:
    out: list[Event] = []
    for _ in range(20):
        decisions = decide(state, POLICY, now, random.Random(1), usable_at)
        if not decisions:
            return out
        for d in decisions:
            fold(state, d.events)
            out += d.events
    raise AssertionError("did not settle")


def throttle(task_id: str, attempt: int, order: float, quota: str = "minute") -> TaskUpstreamThrottled:
    return TaskUpstreamThrottled(
        task_id=task_id,
        attempt=attempt,
        pool="a",
        key_id="a#1",
        code=429,
        quota=quota,
        retry_after=0.5,
        order=order,
        reason="quota",
        at=2.0,
    )


def test_a_throttled_task_goes_back_to_its_place_ahead_of_later_tasks() -> None:
    """First is throttled while second waits: first is dispatched again before second."""
    state = QueueState()
    first, second = submitted(at=1.0), submitted(at=1.5)
    fold(state, [first, second])
    settle(state, 2.0)
    assert list(state.running) == [first.task_id]
    fold(state, [throttle(first.task_id, 1, first.at)])
    assert list(state.waiting_order()) == [first.task_id, second.task_id]
    dispatched = [e for e in settle(state, 2.0) if isinstance(e, TaskDispatched)]
    assert [(e.task_id, e.attempt) for e in dispatched] == [(first.task_id, 2)]


def test_throttled_attempts_do_not_count_against_the_retry_budget() -> None:
    """Five 429s, then two transient failures: it fails only at the second charged attempt."""
    state = QueueState()
    task = submitted(at=1.0)
    fold(state, [task])
    settle(state, 2.0)
    for attempt in range(1, 6):
        fold(state, [throttle(task.task_id, attempt, task.at)])
        settle(state, 2.0)
    assert state.running[task.task_id].attempt == 6 and state.failed == 0
    failure = TaskAttemptFailed(
        task_id=task.task_id, attempt=6, error="503", retryable=True, code=503, at=3.0
    )
    fold(state, [failure])
    settle(state, 3.0)
    assert state.running[task.task_id].attempt == 7
    fold(state, [TaskAttemptFailed(task_id=task.task_id, attempt=7, error="503", retryable=True, at=4.0)])
    ended = [e for e in settle(state, 4.0) if isinstance(e, TaskFailed)]
    assert len(ended) == 1 and "gave up after 2 attempts" in ended[0].error


def test_a_stale_throttle_changes_nothing() -> None:
    """A 429 report of an attempt that no longer holds the slot is ignored."""
    state = QueueState()
    task = submitted(at=1.0)
    fold(state, [task])
    settle(state, 2.0)
    fold(state, [throttle(task.task_id, 7, task.at)])
    assert task.task_id in state.running and state.throttled == 0


def test_nothing_is_dispatched_while_every_pool_is_parked_or_keyless() -> None:
    """Parked pools hold the queue until they come back; a replaced key counts again."""
    pools = [("a", {"a#1": "h1"}), ("b", {"b#1": "h2"})]
    state = QueueState()
    fold(state, [submitted(at=1.0)])
    fold(state, [KeyParked(pool="a", key_id="a#1", until=500.0, quota_id="PerDay", reason="day", at=2.0)])
    fold(state, [KeyDisabled(pool="b", key_id="b#1", hint="h2", code=400, reason="invalid", at=2.0)])
    usable = pools_usable_at(state, pools, 10.0)
    assert usable == 500.0
    assert settle(state, 10.0, usable) == [] and state.waiting == 1
    assert next_wakeup(state, usable) == 500.0
    assert pools_usable_at(state, [("b", {"b#1": "NEW1"})], 10.0) == 10.0
    assert pools_usable_at(state, [("b", {"b#1": "h2"})], 10.0) == math.inf
    assert [type(e) for e in settle(state, 500.0, pools_usable_at(state, pools, 500.0))] == [TaskDispatched]


def test_parked_pool_disabled_key_and_retired_model_raise_and_resolve_alerts() -> None:
    """Each raises once; parking resolves when the day comes back, the model alert on a success."""
    pools = [("a", {"a#1": "h1", "a#2": "h2"})]
    rules = AlertsConfig()
    state = QueueState()
    task = submitted(at=1.0)
    fold(state, [task])
    settle(state, 1.0)
    fold(state, [KeyParked(pool="a", key_id="a#1", until=100.0, quota_id="PerDay", reason="day", at=2.0)])
    fold(state, [KeyDisabled(pool="a", key_id="a#2", hint="h2", code=403, reason="denied", at=2.0)])
    fold(
        state,
        [TaskAttemptFailed(task_id=task.task_id, attempt=1, error="gone", retryable=False, code=404, at=3)],
    )
    raised = evaluate(state, rules, 10.0, pools)
    names = {e.name for e in raised if isinstance(e, AlertRaised)}
    assert names == {"pool_parked:a", "key_disabled:a#2", "model_not_found"}
    fold(state, raised)
    assert evaluate(state, rules, 11.0, pools) == []
    later = submitted(at=20.0)
    fold(state, [later])
    settle(state, 20.0)
    done = TaskSucceeded(
        task_id=later.task_id, attempt=1, result="r", mime_type="image/png", elapsed=1, at=30
    )
    fold(state, [done])
    resolved = {e.name for e in evaluate(state, rules, 101.0, pools) if isinstance(e, AlertResolved)}
    assert resolved == {"pool_parked:a", "model_not_found"}


def test_the_snapshot_keeps_throttles_parking_and_disabled_keys() -> None:
    """restore(snapshot(state)) keeps what the dispatch hold and the alerts read."""
    state = QueueState()
    task = submitted(at=1.0)
    fold(state, [task])
    settle(state, 2.0)
    fold(state, [throttle(task.task_id, 1, task.at)])
    fold(state, [KeyParked(pool="a", key_id="a#1", until=9.0, quota_id="q", reason="r", at=2.0)])
    fold(state, [KeyDisabled(pool="a", key_id="a#2", hint="h", code=403, reason="r", at=2.0)])
    back = restore(snapshot(state))
    assert back.parked == {"a": 9.0} and back.disabled == {"a#2": "h"}
    assert back.tasks[task.task_id].throttled == 1 and back.throttled == 1
