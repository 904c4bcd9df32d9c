"""Admission, credits, fair order and cancellation: the pure decisions and the in-memory store."""

from __future__ import annotations

import asyncio
import random

import pytest

from actors.audit import audit
from actors.queue.decide import Policy, cancel, decide
from actors.queue.state import QueueState, apply, replay, restore, snapshot
from events.admission import Admission, Refusal, Seen, admit, place_round
from events.catalogue import (
    ROUND_SPAN,
    CreditsCharged,
    CreditsGranted,
    CreditsRefunded,
    StoredEvent,
    TaskAttemptFailed,
    TaskCancelled,
    TaskDispatched,
    TaskFailed,
    fair_order,
    round_of,
)
from events.lua import lua_expression
from events.memory_store import MemoryEventStore
from events.redis_submit import SUBMIT_SCRIPT
from tests.helpers import submitted

PRICED = Admission(price=2)


def test_a_new_task_takes_the_current_round_or_the_one_after_its_users_newest() -> None:
    assert place_round(current_round=3, last_round=-1) == 3
    assert place_round(current_round=3, last_round=1) == 3
    assert place_round(current_round=3, last_round=3) == 4
    assert place_round(current_round=3, last_round=9) == 10
    assert round_of(fair_order(7, 5)) == 7
    assert fair_order(7, 2**20 - 1) < fair_order(8, 1)


def test_the_redis_script_runs_the_round_rule_translated_from_python() -> None:
    """The store's script holds `place_round` as Lua; a rule Lua could not run is refused."""
    expected = "(last_round >= current_round and (last_round + 1) or current_round)"
    assert lua_expression(place_round) == expected
    assert f"local function place_round(current_round, last_round) return {expected} end" in SUBMIT_SCRIPT

    def floor_division(a: int, b: int) -> int:
        return a // b

    def two_steps(a: int) -> int:
        b = a + 1
        return b

    def unknown_name(a: int) -> int:
        return a + ROUND_SPAN

    for rule in (floor_division, two_steps, unknown_name):
        with pytest.raises(ValueError, match=rule.__name__):
            lua_expression(rule)

    def every_form(a: int, b: int) -> int:
        """A docstring is no part of the rule."""
        return min(a * 2 - 1, max(a, b, 0)) if a < b else (a if a == b else 0 - b)

    assert lua_expression(every_form) == (
        "(a < b and math.min(((a * 2) - 1), math.max(a, b, 0)) or (a == b and a or (0 - b)))"
    )


def test_admission_refuses_a_full_queue_a_full_user_and_a_short_balance_in_that_order() -> None:
    event = submitted(user="a")
    full = Seen(balance=0, welcomed=True, last_round=9, current_round=0, waiting=100)
    bounds = Admission(price=1, per_user_waiting=10, max_waiting=100)
    assert isinstance(r := admit(event, bounds, full, 10, 1), Refusal) and r.reason == "queue_full"
    busy = Seen(balance=0, welcomed=True, last_round=9, current_round=0, waiting=50)
    assert isinstance(r := admit(event, bounds, busy, 10, 1), Refusal) and r.reason == "user_waiting"
    poor = Seen(balance=0, welcomed=True, last_round=8, current_round=0, waiting=50)
    refusal = admit(event, bounds, poor, 9, 1)
    assert refusal == Refusal("credits", balance=0, price=1, waiting=50)


def test_a_default_grant_comes_once_and_pays_for_the_first_task() -> None:
    event = submitted(user="new")
    seen = Seen(balance=0, welcomed=False, last_round=-1, current_round=0, waiting=0)
    events = admit(event, Admission(price=2, default_grant=5), seen, 0, 1)
    assert not isinstance(events, Refusal)
    assert [type(e) for e in events[::2]] == [CreditsGranted, CreditsCharged]
    assert events[0].amount == 5 and events[2].amount == 2
    again = admit(event, Admission(price=2, default_grant=5), Seen(0, True, 0, 0, 1), 1, 1)
    assert isinstance(again, Refusal) and again.balance == 0


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_the_balance_pays_for_exactly_as_many_tasks_as_it_covers() -> None:
    async def main() -> tuple[list[bool], dict[str, str]]:
        store = MemoryEventStore()
        await store.append([CreditsGranted(user_id="a", amount=10, at=0.0)])
        receipts = [await store.submit(submitted(user="a"), PRICED) for _ in range(8)]
        totals, ledger = await store.user("a")
        assert [e["amount"] for e in ledger[:2]] == [-2, -2]
        return [r.refused is None for r in receipts], totals

    accepted, totals = run(main())
    assert accepted == [True] * 5 + [False] * 3
    assert totals["balance"] == "0" and totals["charged"] == "10"


def test_users_take_turns_one_users_500_tasks_delay_anothers_by_one_turn() -> None:
    async def main() -> tuple[int | None, int | None, list[str]]:
        store = MemoryEventStore()
        heavy = [submitted(user="a", at=float(i)) for i in range(500)]
        for event in heavy:
            await store.submit(event)
        light = await store.submit(submitted(user="b", at=600.0))
        third = await store.submit(submitted(user="c", at=601.0))
        state = replay(await store.read())
        return light.position, third.position, list(state.waiting_order())[:4]

    b_position, c_position, head = run(main())
    assert b_position == 1  # behind a's first task only
    assert c_position == 2
    assert len(head) == 4 and head[1:3] != head[0:2]


def fold(events: list) -> QueueState:  # type: ignore[type-arg]
    state = QueueState()
    for i, event in enumerate(events):
        apply(state, StoredEvent(f"1-{i + 1}", event))
    return state


def test_the_queue_dispatches_in_fair_order_and_caps_running_tasks_per_user() -> None:
    a = [submitted(user="a", at=1.0 + i) for i in range(4)]
    b = submitted(user="b", at=9.0)
    orders = [fair_order(i, 1) for i in range(4)] + [fair_order(0, 2)]
    from dataclasses import replace

    events = [replace(e, order=o) for e, o in zip([*a, b], orders, strict=True)]
    state = fold(events)
    assert list(state.waiting_order()) == [a[0].task_id, b.task_id, a[1].task_id, a[2].task_id, a[3].task_id]
    policy = Policy(slots=4, lease_seconds=60, max_attempts=3, workers=1, per_user_running=2)
    (decision,) = decide(state, policy, 10.0, random.Random(1))
    dispatched = [e.task_id for e in decision.events if isinstance(e, TaskDispatched)]
    assert dispatched == [a[0].task_id, b.task_id, a[1].task_id]


def test_a_failed_task_is_refunded_once_with_its_failure_and_the_audit_agrees() -> None:
    task = submitted(user="a")
    log = [
        CreditsGranted(user_id="a", amount=3, at=0.0),
        task,
        CreditsCharged(user_id="a", task_id=task.task_id, amount=2, at=1.0),
        TaskDispatched(task_id=task.task_id, attempt=1, worker=0, lease_deadline=99.0, at=2.0),
        TaskAttemptFailed(task_id=task.task_id, attempt=1, error="no image", retryable=False, at=3.0),
    ]
    state = fold(log)
    policy = Policy(slots=1, lease_seconds=60, max_attempts=3, workers=1)
    (decision,) = decide(state, policy, 4.0, random.Random(1))
    assert [type(e) for e in decision.events] == [TaskFailed, CreditsRefunded]
    assert decision.events[1].amount == 2
    stored = [StoredEvent(f"1-{i + 1}", e) for i, e in enumerate([*log, *decision.events])]
    report = audit(stored)
    assert report.ok and report.refunds == 1 and report.credits == {"granted": 3, "charged": 2, "refunded": 2}
    twice = [*stored, StoredEvent("1-99", decision.events[1])]
    assert not audit(twice).ok and "refunded 2 times" in audit(twice).refund_errors[0]


def test_the_audit_names_an_unrefunded_failure_and_an_overdraft() -> None:
    task = submitted(user="a")
    log = [
        task,
        CreditsCharged(user_id="a", task_id=task.task_id, amount=1, at=1.0),
        TaskFailed(task_id=task.task_id, attempt=0, error="x", at=2.0),
    ]
    report = audit([StoredEvent(f"1-{i + 1}", e) for i, e in enumerate(log)])
    assert report.overdrawn == ["a"]
    assert report.refund_errors == [f"{task.task_id}: failed without a refund"]


def test_only_a_waiting_task_can_be_cancelled_and_it_is_refunded() -> None:
    waiting, running = submitted(user="a"), submitted(user="a")
    state = fold(
        [
            waiting,
            CreditsCharged(user_id="a", task_id=waiting.task_id, amount=1, at=1.0),
            running,
            TaskDispatched(task_id=running.task_id, attempt=1, worker=0, lease_deadline=99.0, at=2.0),
        ]
    )
    decision = cancel(state, waiting.task_id, 3.0)
    assert not isinstance(decision, str)
    assert [type(e) for e in decision.events] == [TaskCancelled, CreditsRefunded]
    assert cancel(state, running.task_id, 3.0) == "running"
    assert cancel(state, "f" * 32, 3.0) == "ended"


def test_the_fair_queue_survives_a_snapshot() -> None:
    from dataclasses import replace

    events = [replace(submitted(user=u, at=float(i)), order=fair_order(i, 1)) for i, u in enumerate("abc")]
    state = fold(events)
    import json

    again = restore(json.loads(json.dumps(snapshot(state))))
    assert list(again.waiting_order()) == list(state.waiting_order())


@pytest.mark.parametrize("kind,price", [("photography", 1), ("fitting", 2)])
def test_prices_come_from_config(kind: str, price: int) -> None:
    from actors.config import CreditsConfig

    assert CreditsConfig().price(kind) == price
    assert CreditsConfig(enabled=False).price(kind) == 0
