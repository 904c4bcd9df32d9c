"""Property tests of the pure queue fold and decisions: FIFO, slot bound, retries, replay."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.queue.decide import (
    ROUND_CHUNK,
    Decision,
    Policy,
    backoff,
    decide,
    dispatch_only,
    gathers,
    next_wakeup,
)
from actors.queue.state import QueueState, apply, replay, restore, snapshot
from events.catalogue import (
    QUEUED,
    RUNNING,
    Event,
    StoredEvent,
    TaskAttemptFailed,
    TaskDispatched,
    TaskFailed,
    TaskLeaseExpired,
    TaskRetryScheduled,
    TaskSucceeded,
)
from events.store import Expect
from tests.helpers import submitted

Op = tuple[str, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 3)),
        st.tuples(st.just("succeed"), st.integers(0, 10)),
        st.tuples(st.just("fail"), st.integers(0, 10)),
        st.tuples(st.just("fatal"), st.integers(0, 10)),
        st.tuples(st.just("tick"), st.integers(1, 40)),
    ),
    max_size=60,
)


class Sim:
    """Drives the pure queue with a log, as the QueueActor does with Redis."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.state = QueueState()
        self.log: list[StoredEvent] = []
        self.now = 0.0
        self.rng = random.Random(7)
        self.submit_order: list[str] = []
        self.first_dispatches: list[str] = []

    def append(self, events: list[Event] | tuple[Event, ...]) -> None:
        for event in events:
            stored = StoredEvent(f"1-{len(self.log) + 1}", event)
            self.log.append(stored)
            apply(self.state, stored)
            if isinstance(event, TaskDispatched) and event.attempt == 1:
                self.first_dispatches.append(event.task_id)

    def holds(self, decision: Decision) -> bool:
        """Whether the decision's expectations hold, as the store checks them on the task views."""
        return all(self._holds(t, want) for t, want in decision.expect.items())

    def _holds(self, task_id: str, want: Expect) -> bool:
        if want.status == RUNNING:
            lease = self.state.running.get(task_id)
            return lease is not None and lease.attempt == want.attempt
        entry = self.state.tasks.get(task_id)
        return (
            want.status == QUEUED
            and entry is not None
            and self.state.is_waiting(task_id)
            and entry.attempts == want.attempt
        )

    def settle(self) -> None:
        """Decide and apply until there is nothing left to do, as the actor's loop does."""
        for _ in range(100):
            decisions = decide(self.state, self.policy, self.now, self.rng)
            if not decisions:
                return
            for decision in decisions:
                if self.holds(decision):
                    self.append(decision.events)
        raise AssertionError("decisions did not settle")

    def running_at(self, index: int) -> tuple[str, int] | None:
        running = sorted(self.state.running.items())
        if not running:
            return None
        task_id, lease = running[index % len(running)]
        return task_id, lease.attempt

    def step(self, op: Op) -> None:
        name, arg = op
        if name == "submit":
            for _ in range(arg):
                event = submitted(at=self.now)
                self.submit_order.append(event.task_id)
                self.append([event])
        elif name == "tick":
            self.now += arg / 10
        elif (found := self.running_at(arg)) is not None:
            task_id, attempt = found
            if name == "succeed":
                self.append(
                    [
                        TaskSucceeded(
                            task_id=task_id,
                            attempt=attempt,
                            result="r",
                            mime_type="image/png",
                            elapsed=0.1,
                            at=self.now,
                        )
                    ]
                )
            else:
                self.append(
                    [
                        TaskAttemptFailed(
                            task_id=task_id,
                            attempt=attempt,
                            error="boom",
                            retryable=name == "fail",
                            at=self.now,
                        )
                    ]
                )
        self.settle()


def fields(state: QueueState) -> dict[str, object]:
    d = asdict(state)
    d.pop("last_id")
    return d


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(1, 5))
def test_running_never_exceeds_slots_and_first_dispatches_are_fifo(script: list[Op], slots: int) -> None:
    """At every step running <= slots, and tasks first start in the order they were submitted."""
    sim = Sim(Policy(slots=slots, lease_seconds=3.0, max_attempts=3, workers=2))
    for op in script:
        sim.step(op)
        assert len(sim.state.running) <= slots
    assert sim.first_dispatches == sim.submit_order[: len(sim.first_dispatches)]


@settings(max_examples=150, deadline=None)
@given(ops)
def test_replaying_the_log_gives_the_live_state(script: list[Op]) -> None:
    """Folding the recorded log from scratch gives exactly the state built live, step by step."""
    sim = Sim(Policy(slots=2, lease_seconds=3.0, max_attempts=2, workers=2))
    for op in script:
        sim.step(op)
    assert fields(replay(sim.log)) == fields(sim.state)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_every_task_ends_at_most_once_and_stuck_tasks_are_accounted_for(script: list[Op]) -> None:
    """No task ends twice; every task is ended, or waiting, running or awaiting a decision."""
    sim = Sim(Policy(slots=2, lease_seconds=3.0, max_attempts=2, workers=2))
    for op in script:
        sim.step(op)
    ended = [s.event.task_id for s in sim.log if isinstance(s.event, TaskSucceeded | TaskFailed)]
    live = set(sim.state.tasks)
    assert not live & set(ended)
    accepted_ends = sim.state.succeeded + sim.state.failed
    assert accepted_ends + len(live) == len(sim.submit_order)


def test_a_lease_that_passes_its_deadline_is_expired_and_retried_at_the_head() -> None:
    """An expired lease frees the slot and puts the task back before later submissions."""
    sim = Sim(Policy(slots=1, lease_seconds=5.0, max_attempts=3, workers=1, backoff_base=0.0))
    sim.step(("submit", 2))
    first, second = sim.submit_order
    assert list(sim.state.running) == [first]
    sim.now = 5.0
    sim.settle()
    types = [s.event.type for s in sim.log]
    assert "task.lease_expired" in types and "task.retry_scheduled" in types
    assert list(sim.state.running) == [first] and sim.state.running[first].attempt == 2
    assert list(sim.state.waiting_order()) == [second]


def test_a_task_fails_for_good_after_max_attempts() -> None:
    """Retryable failures are retried until max_attempts, then the task fails once."""
    sim = Sim(Policy(slots=1, lease_seconds=100.0, max_attempts=2, workers=1, backoff_base=0.0))
    sim.step(("submit", 1))
    sim.step(("fail", 0))
    sim.step(("fail", 0))
    fails = [s.event for s in sim.log if isinstance(s.event, TaskFailed)]
    assert len(fails) == 1 and "gave up after 2 attempts" in fails[0].error
    assert sim.state.failed == 1 and not sim.state.tasks


def test_a_permanent_failure_is_not_retried() -> None:
    """A non-retryable failure ends the task at once with the provider's reason."""
    sim = Sim(Policy(slots=1, lease_seconds=100.0, max_attempts=5, workers=1))
    sim.step(("submit", 1))
    sim.step(("fatal", 0))
    assert [type(s.event) for s in sim.log][-1] is TaskFailed
    assert not any(isinstance(s.event, TaskRetryScheduled) for s in sim.log)


def test_late_outcome_of_an_expired_attempt_changes_nothing() -> None:
    """A success of an attempt whose lease expired is ignored by the fold."""
    sim = Sim(Policy(slots=1, lease_seconds=1.0, max_attempts=3, workers=1, backoff_base=0.0))
    sim.step(("submit", 1))
    task = sim.submit_order[0]
    sim.now = 2.0
    sim.settle()
    assert sim.state.running[task].attempt == 2
    sim.append([TaskSucceeded(task_id=task, attempt=1, result="old", mime_type="image/png", elapsed=1, at=2)])
    assert sim.state.running[task].attempt == 2 and sim.state.succeeded == 0


def test_retry_waits_for_its_backoff() -> None:
    """A retried task is not dispatched before not_before, and the wake-up time says when."""
    sim = Sim(
        Policy(
            slots=1,
            lease_seconds=100.0,
            max_attempts=3,
            workers=1,
            backoff_base=4.0,
            backoff_cap=4.0,
        )
    )
    sim.rng = random.Random(1)
    sim.step(("submit", 1))
    sim.step(("fail", 0))
    task = sim.submit_order[0]
    not_before = sim.state.not_before[task]
    assert not sim.state.running and next_wakeup(sim.state) == not_before
    sim.now = not_before
    sim.settle()
    assert sim.state.running[task].attempt == 2


def test_a_retry_due_while_every_slot_is_held_is_no_wake_up() -> None:
    """Once its backoff has passed, a retry waits for a slot, which frees with an event: the
    wake-up is the running lease's deadline, not the past retry time (a queue woken for that
    would step every millisecond and find nothing to do)."""
    sim = Sim(
        Policy(slots=1, lease_seconds=100.0, max_attempts=3, workers=1, backoff_base=4.0, backoff_cap=4.0)
    )
    sim.rng = random.Random(1)
    sim.step(("submit", 1))
    sim.step(("fail", 0))
    retried = sim.submit_order[0]
    not_before = sim.state.not_before[retried]
    sim.step(("submit", 1))
    other = sim.submit_order[1]
    assert set(sim.state.running) == {other}
    sim.now = not_before + 1.0
    sim.settle()
    assert set(sim.state.running) == {other} and sim.state.is_waiting(retried)
    assert next_wakeup(sim.state, now=sim.now) == sim.state.running[other].deadline > sim.now
    assert next_wakeup(sim.state, now=not_before - 1.0) == not_before


def test_backoff_grows_and_is_capped() -> None:
    """Backoff doubles per attempt up to the cap, scaled by the jitter unit."""
    assert [backoff(a, 1.0, 5.0, 1.0) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert backoff(3, 1.0, 5.0, 0.5) == 2.0


def test_lease_expiry_decision_is_guarded_by_the_attempt() -> None:
    """Expiring a lease expects the task to still run that attempt."""
    sim = Sim(Policy(slots=1, lease_seconds=1.0, max_attempts=3, workers=1))
    sim.step(("submit", 1))
    decisions = decide(sim.state, sim.policy, 5.0, random.Random(0))
    expiring = [d for d in decisions if any(isinstance(e, TaskLeaseExpired) for e in d.events)]
    assert len(expiring) == 1
    ((task, want),) = expiring[0].expect.items()
    assert want.status == "running" and want.attempt == 1 and task == sim.submit_order[0]


@settings(max_examples=100, deadline=None)
@given(ops, st.integers(0, 60))
def test_a_snapshot_plus_the_rest_of_the_log_gives_the_live_state(script: list[Op], cut: int) -> None:
    """Restoring a snapshot taken mid-log and replaying what follows equals the live state."""
    sim = Sim(Policy(slots=2, lease_seconds=3.0, max_attempts=2, workers=2))
    for op in script:
        sim.step(op)
    cut = min(cut, len(sim.log))
    taken = json.loads(json.dumps(snapshot(replay(sim.log[:cut]))))
    rebuilt = replay(sim.log[cut:], restore(taken))
    assert fields(rebuilt) == fields(sim.state)


def test_a_malformed_snapshot_raises_value_error() -> None:
    """Missing keys, a wrong version or wrong shapes are a ValueError, never a half-built state."""
    good = snapshot(QueueState())
    for bad in ({}, {**good, "v": 99}, {**good, "tasks": [{"nope": 1}]}, {**good, "queue": 5}):
        with pytest.raises(ValueError):
            restore(bad)


def test_a_dispatch_decided_twice_from_the_same_state_is_written_once() -> None:
    """Each dispatched task is guarded by its waiting attempt count, so a decision repeated from
    a state that missed the first one's events appends nothing to the store."""
    import asyncio

    from events.memory_store import MemoryEventStore

    async def run() -> list[int]:
        store = MemoryEventStore()
        state = QueueState()
        events = [submitted(at=0.0) for _ in range(3)]
        await store.append(events)
        for stored in await store.read():
            apply(state, stored)
        policy = Policy(slots=2, lease_seconds=10, max_attempts=3, workers=1)
        (first,) = decide(state, policy, 1.0, random.Random(1))
        assert set(first.expect) == {e.task_id for e in first.events if isinstance(e, TaskDispatched)}
        assert all(want == Expect(QUEUED, 0) for want in first.expect.values())
        written = await store.append(first.events, first.expect)
        again = await store.append(first.events, first.expect)
        assert written is not None and again is None
        return [e.attempt for s in await store.read() if isinstance(e := s.event, TaskDispatched)]

    assert asyncio.run(run()) == [1, 1]


def test_only_the_dispatches_given_tokens_stay_and_the_rest_keep_their_places() -> None:
    """With 2 tokens for 4 dispatches, the first two in queue order stay (with their guards) and
    the other two are neither dispatched nor guarded; with none, the decision goes whole."""
    state = replay([StoredEvent(f"1-{i}", submitted(at=float(i))) for i in range(4)])
    policy = Policy(slots=4, lease_seconds=5.0, max_attempts=3, workers=1)
    decisions = decide(state, policy, 10.0, random.Random(1))
    order = list(state.waiting_order())
    (kept,) = dispatch_only(decisions, 2)
    assert [e.task_id for e in kept.events if isinstance(e, TaskDispatched)] == order[:2]
    assert set(kept.expect) == set(order[:2])
    assert dispatch_only(decisions, 0) == []
    assert dispatch_only(decisions, 4) == decisions


def test_only_submits_to_a_queue_with_nothing_waiting_are_gathered_for() -> None:
    """`gathers` ([queue] gather_ms): a read that brings submits while nothing waits is waited on
    for more; not an empty or full read, not one without submits, nor one while a task waits."""
    state = QueueState()
    first = StoredEvent("1-1", submitted("a", at=1.0))
    assert gathers(state, [first], full=False)
    assert not gathers(state, [], full=False)
    assert not gathers(state, [first], full=True)
    apply(state, first)
    second = StoredEvent("1-2", submitted("b", at=2.0))
    assert not gathers(state, [second], full=False)  # "a" waits: decide at once
    apply(
        state,
        StoredEvent("1-3", TaskDispatched(task_id="a", attempt=1, worker=0, lease_deadline=60.0, at=3.0)),
    )
    ended = TaskSucceeded(task_id="a", attempt=1, result="r", mime_type="image/png", elapsed=0.5, at=4.0)
    assert not gathers(state, [StoredEvent("1-4", ended)], full=False)
    assert gathers(state, [second], full=False)


def _workers_of(state: QueueState, policy: Policy, now: float) -> list[int]:
    """The workers of the round `decide` makes at `now`, in queue order, folded into `state`."""
    (round_,) = decide(state, policy, now, random.Random(1))
    dispatched = [e for e in round_.events if isinstance(e, TaskDispatched)]
    for i, event in enumerate(dispatched):
        apply(state, StoredEvent(f"2-{int(now * 1000) + i}", event))
    return [e.worker for e in dispatched]


def test_a_small_round_goes_to_one_worker_and_a_large_one_is_spread_in_chunks() -> None:
    """A round of up to ROUND_CHUNK dispatches goes to the least loaded worker alone (one call,
    one outcome append); a larger round changes worker each time one holds ROUND_CHUNK more
    than the least loaded, so the workers' loads never part by more than that."""
    big = 3 * ROUND_CHUNK + 2
    state = replay([StoredEvent(f"1-{i}", submitted(at=float(i))) for i in range(big + 3)])
    policy = Policy(slots=big + 3, lease_seconds=60.0, max_attempts=3, workers=2)
    waiting = list(state.waiting_order())
    first = _workers_of(state, replace(policy, slots=big), 100.0)
    # Worker 0 until it holds ROUND_CHUNK more than worker 1, then worker 1 until it holds
    # ROUND_CHUNK more than worker 0, and so on.
    assert first == [0] * ROUND_CHUNK + [1] * 2 * ROUND_CHUNK + [0] * 2
    loads = [first.count(0), first.count(1)]
    assert max(loads) - min(loads) <= ROUND_CHUNK
    # The next small round (3 tasks): all to the worker with fewer running, in one call.
    assert _workers_of(state, policy, 101.0) == [0, 0, 0]
    assert not state.waiting and [t for t in waiting if t not in state.running] == []
