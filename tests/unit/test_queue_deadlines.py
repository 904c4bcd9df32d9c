"""Deadlines in the pure queue: a task not started upstream by its deadline ends expired, once,
refunded in the same append, and never after one of its calls started; replay and snapshots
keep the deadlines."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.queue.decide import Policy, decide, next_wakeup
from actors.queue.state import replay, restore, snapshot
from events.catalogue import (
    CreditsCharged,
    CreditsRefunded,
    TaskDispatched,
    TaskExpired,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from tests.helpers import submitted
from tests.unit.test_queue_decisions import Op, Sim, fields

deadline_ops = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 3)),
        st.tuples(st.just("submit_deadline"), st.integers(1, 30)),
        st.tuples(st.just("start"), st.integers(0, 10)),
        st.tuples(st.just("succeed"), st.integers(0, 10)),
        st.tuples(st.just("fail"), st.integers(0, 10)),
        st.tuples(st.just("worker_expires"), st.integers(0, 10)),
        st.tuples(st.just("tick"), st.integers(1, 40)),
    ),
    max_size=60,
)


class DeadlineSim(Sim):
    """The queue simulation with deadlines, charges, calls starting and workers expiring tasks."""

    def step(self, op: Op) -> None:
        name, arg = op
        if name == "submit_deadline":
            event = replace(submitted(at=self.now), deadline=self.now + arg / 10)
            self.submit_order.append(event.task_id)
            self.append([event, CreditsCharged(user_id="u1", task_id=event.task_id, amount=2, at=self.now)])
        elif name == "start" and (found := self.running_at(arg)) is not None:
            task_id, attempt = found
            self.append(
                [
                    TaskStarted(
                        task_id=task_id, attempt=attempt, pool="p", key_id="p#1", waited=0.0, at=self.now
                    )
                ]
            )
        elif name == "worker_expires" and (found := self.running_at(arg)) is not None:
            # What the worker appends when its attempt's token would come after the deadline.
            task_id, attempt = found
            entry = self.state.tasks[task_id]
            if entry.deadline and not entry.started and self.now >= entry.deadline:
                self.append(
                    [
                        TaskExpired(task_id=task_id, attempt=attempt, deadline=entry.deadline, at=self.now),
                        CreditsRefunded(
                            user_id="u1", task_id=task_id, amount=2, reason="expired", at=self.now
                        ),
                    ]
                )
        else:
            super().step(op)
            return
        self.settle()


def policy() -> Policy:
    return Policy(slots=2, lease_seconds=3.0, max_attempts=2, workers=2, backoff_base=0.5)


@settings(max_examples=200, deadline=None)
@given(deadline_ops)
def test_expired_tasks_made_no_call_ended_once_and_were_refunded_in_the_same_append(script: list[Op]) -> None:
    """Whatever happens: no task that started a call expires; each task ends at most once; each
    expiry is followed at once by the refund of the whole charge; no attempt is dispatched at or
    after its task's deadline unless a call of the task had started; and once time passes every
    deadline, no task whose deadline still applies waits any more."""
    sim = DeadlineSim(policy())
    for op in script:
        sim.step(op)
    log = [s.event for s in sim.log]
    deadlines = {
        e.task_id: e.deadline for e in log if hasattr(e, "deadline") and not isinstance(e, TaskExpired)
    }
    started: set[str] = set()
    ended: list[str] = []
    for i, event in enumerate(log):
        if isinstance(event, TaskStarted):
            started.add(event.task_id)
        if (
            isinstance(event, TaskDispatched)
            and deadlines.get(event.task_id)
            and event.task_id not in started
        ):
            assert event.at < deadlines[event.task_id]
        if isinstance(event, TaskSucceeded | TaskFailed | TaskExpired):
            ended.append(event.task_id)
        if isinstance(event, TaskExpired):
            assert event.task_id not in started
            refund = log[i + 1]
            assert isinstance(refund, CreditsRefunded) and (refund.task_id, refund.amount) == (
                event.task_id,
                2,
            )
    assert len(ended) == len(set(ended))
    assert sim.state.expired == sum(isinstance(e, TaskExpired) for e in log)
    sim.now += 10
    sim.settle()
    waiting = [sim.state.tasks[t] for t in sim.state.waiting_order()]
    assert not any(entry.deadline and not entry.started for entry in waiting)


@settings(max_examples=100, deadline=None)
@given(deadline_ops, st.integers(0, 80))
def test_replay_and_a_snapshot_keep_deadlines(script: list[Op], cut: int) -> None:
    """The live state equals the replayed one, and a snapshot plus the rest of the log."""
    sim = DeadlineSim(policy())
    for op in script:
        sim.step(op)
    assert fields(replay(sim.log)) == fields(sim.state)
    cut = min(cut, len(sim.log))
    taken = json.loads(json.dumps(snapshot(replay(sim.log[:cut]))))
    assert fields(replay(sim.log[cut:], restore(taken))) == fields(sim.state)


def test_a_waiting_task_expires_at_its_deadline_and_the_next_one_takes_its_turn() -> None:
    """One slot, busy: the second task (deadline 1 s) expires at 1.0 with its refund, guarded as
    waiting; the wake-up time is its deadline; the third (no deadline) is dispatched next."""
    sim = DeadlineSim(Policy(slots=1, lease_seconds=100.0, max_attempts=2, workers=1))
    sim.step(("submit", 1))
    sim.step(("submit_deadline", 10))
    sim.step(("submit", 1))
    first, second, third = sim.submit_order
    assert list(sim.state.running) == [first]
    assert next_wakeup(sim.state) == 1.0
    assert decide(sim.state, sim.policy, 0.99, sim.rng) == []
    (expiry,) = decide(sim.state, sim.policy, 1.0, sim.rng)
    assert [type(e) for e in expiry.events] == [TaskExpired, CreditsRefunded]
    assert expiry.expect[second].status == "queued" and expiry.expect[second].attempt == 0
    sim.now = 1.0
    sim.settle()
    sim.step(("succeed", 0))
    assert list(sim.state.running) == [third] and sim.state.expired == 1


def test_a_started_task_is_retried_past_its_deadline_not_expired() -> None:
    """Once a call of it started, a task's deadline no longer applies: a failed attempt is retried."""
    sim = DeadlineSim(Policy(slots=1, lease_seconds=100.0, max_attempts=3, workers=1, backoff_base=0.0))
    sim.step(("submit_deadline", 5))
    sim.step(("start", 0))
    sim.now = 2.0
    sim.step(("fail", 0))
    (task,) = sim.submit_order
    assert sim.state.running[task].attempt == 2 and sim.state.expired == 0
