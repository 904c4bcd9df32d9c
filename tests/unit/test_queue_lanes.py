"""The queue's slots shared among priority lanes by weight, with reserved slots; pure, no Ray."""

from __future__ import annotations

import random
from dataclasses import replace

from actors.queue.decide import Policy, decide, recalls
from actors.queue.state import QueueState, apply, restore, snapshot
from events.catalogue import Event, StoredEvent, TaskDispatched, TaskStarted, TaskSucceeded, fair_order
from tests.helpers import submitted

WEIGHTS = {"paid": 4.0, "free": 1.0}


class Queue:
    """A pure queue fed with events as the QueueActor feeds it."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.state, self.n = policy, QueueState(), 0

    def add(self, *events: Event) -> None:
        for event in events:
            self.n += 1
            apply(self.state, StoredEvent(f"1-{self.n}", event))

    def submit(self, lane: str, count: int, user: str = "", round_: int = 1) -> list[str]:
        ids = []
        for _ in range(count):
            tid = f"{lane}{self.n:06d}".ljust(32, "0")
            who = user or f"{lane}-user-{self.n}"
            self.add(
                replace(submitted(tid, at=self.n, user=who), lane=lane, order=fair_order(round_, self.n))
            )
            ids.append(tid)
        return ids

    def dispatch(self, now: float = 100.0) -> list[TaskDispatched]:
        decisions = decide(self.state, self.policy, now, random.Random(1))
        sent = [e for d in decisions for e in d.events if isinstance(e, TaskDispatched)]
        self.add(*sent)
        return sent

    def finish(self, dispatched: list[TaskDispatched]) -> None:
        for d in dispatched:
            self.add(
                TaskSucceeded(
                    task_id=d.task_id,
                    attempt=d.attempt,
                    result="r",
                    mime_type="image/png",
                    elapsed=1.0,
                    at=200.0,
                )
            )


def lanes_of(dispatched: list[TaskDispatched], q: Queue) -> list[str]:
    return ["paid" if d.task_id.startswith("paid") else "free" for d in dispatched]


def test_a_paid_task_behind_a_free_flood_takes_the_next_slot() -> None:
    """100 free tasks (100 users, one round) came first and hold every slot; a paid task comes
    after them in the same round. The next slot that frees goes to it, not to the 101st in line."""
    q = Queue(Policy(slots=10, lease_seconds=60, max_attempts=3, workers=2, weights=WEIGHTS))
    q.submit("free", 100)
    first = q.dispatch()
    assert len(first) == 10
    (paid,) = q.submit("paid", 1)
    q.finish(first[:1])
    (taken,) = q.dispatch()
    assert taken.task_id == paid


def test_with_both_lanes_flooded_the_slots_split_by_weight() -> None:
    """Both lanes hold more than the slots: paid (weight 4) gets 8 of 10 slots, free 2; as slots
    turn over one at a time the share holds, and free is never starved."""
    q = Queue(Policy(slots=10, lease_seconds=60, max_attempts=3, workers=2, weights=WEIGHTS))
    q.submit("free", 200)
    q.submit("paid", 200)
    held = q.dispatch()
    assert sorted(lanes_of(held, q)).count("paid") == 8
    seen = []
    for _ in range(50):
        q.finish(held[:1])
        held = held[1:] + q.dispatch()
        seen.append(lanes_of(held, q).count("free"))
    assert min(seen) >= 2  # free keeps its share at every step


def test_a_lane_with_nothing_waiting_lends_its_share_and_gets_it_back() -> None:
    """Only free tasks: they take every slot. Paid tasks arrive: each slot freed goes to paid
    until paid holds its share (8 of 10)."""
    q = Queue(Policy(slots=10, lease_seconds=60, max_attempts=3, workers=2, weights=WEIGHTS))
    q.submit("free", 100)
    held = q.dispatch()
    assert lanes_of(held, q) == ["free"] * 10
    q.submit("paid", 50)
    for _ in range(8):
        q.finish(held[:1])
        held = held[1:] + q.dispatch()
    assert lanes_of(held, q).count("paid") == 8
    q.finish(held[:1])
    held = held[1:] + q.dispatch()
    assert lanes_of(held, q).count("paid") == 8  # at its share: the freed free slot stays free's


def test_reserved_slots_stay_free_for_their_lane() -> None:
    """paid keeps 3 of 10 slots: a free flood takes 7, and a paid task then starts at once."""
    policy = Policy(
        slots=10, lease_seconds=60, max_attempts=3, workers=2, weights=WEIGHTS, reserved={"paid": 3}
    )
    q = Queue(policy)
    q.submit("free", 100)
    assert len(q.dispatch()) == 7
    (paid,) = q.submit("paid", 1)
    assert [d.task_id for d in q.dispatch()] == [paid]
    assert q.dispatch() == []  # paid holds 1 of its 3: two stay kept, free gets none of them


def test_inside_a_lane_users_take_turns() -> None:
    """One free user's 5 tasks (rounds 1-5) and 5 other free users' single tasks (round 1):
    the lane's order is the queue's fair order, so the others go before the heavy user's second."""
    q = Queue(Policy(slots=6, lease_seconds=60, max_attempts=3, workers=1, weights=WEIGHTS))
    heavy = [q.submit("free", 1, user="heavy", round_=r)[0] for r in range(1, 6)]
    others = q.submit("free", 5)
    got = [d.task_id for d in q.dispatch()]
    assert got == [heavy[0], *others]


def test_without_lanes_the_order_is_the_fair_order_whatever_the_lane_field() -> None:
    q = Queue(Policy(slots=3, lease_seconds=60, max_attempts=3, workers=1))
    a = q.submit("free", 2)
    b = q.submit("paid", 2)
    assert [d.task_id for d in q.dispatch()] == [*a, b[0]]


def test_the_lane_lists_come_back_with_a_restored_snapshot() -> None:
    q = Queue(Policy(slots=4, lease_seconds=60, max_attempts=3, workers=1, weights=WEIGHTS))
    q.submit("free", 20)
    q.submit("paid", 3)
    back = restore(snapshot(q.state))
    assert {lane: list(places) for lane, places in back.lanes.items()} == {
        lane: list(places) for lane, places in q.state.lanes.items()
    }


def test_slots_lent_to_free_are_taken_back_from_its_newest_holders_without_a_call() -> None:
    """Free holds all 10 slots (no call started); 5 paid tasks come. Paid's share is 9 slots:
    5 are asked back, the newest free holders first; one whose call started is never asked.
    With no paid task ready (all in a retry's backoff) or no lanes, none is."""
    q = Queue(Policy(slots=10, lease_seconds=60, max_attempts=3, workers=2, weights=WEIGHTS))
    q.submit("free", 30)
    held = q.dispatch()  # one round: the newest holders are those dispatched last
    assert len(held) == 10
    q.add(TaskStarted(task_id=held[9].task_id, attempt=1, pool="p", key_id="k", waited=0.0, at=101.0))
    q.submit("paid", 5)
    asked = recalls(q.state, q.policy, 102.0)
    assert asked == [(d.task_id, 1) for d in reversed(held[4:9])]
    for task_id in q.state.lanes["paid"]:
        q.state.not_before[task_id[2]] = 200.0
    assert recalls(q.state, q.policy, 102.0) == []
    plain = Queue(Policy(slots=10, lease_seconds=60, max_attempts=3, workers=2))
    plain.submit("free", 30)
    plain.dispatch()
    plain.submit("paid", 5)
    assert recalls(plain.state, plain.policy, 102.0) == []


def test_free_slots_are_given_before_any_is_taken_back() -> None:
    """4 of 10 slots free: a paid task short of its share takes a free slot; nothing is asked back
    until the free slots are used."""
    q = Queue(Policy(slots=10, lease_seconds=60, max_attempts=3, workers=2, weights=WEIGHTS))
    q.submit("free", 6)
    q.dispatch()
    q.submit("paid", 3)
    assert recalls(q.state, q.policy, 100.0) == []
