"""The daily spend cap over every store: refused exactly past the cap with nothing charged or
written, room freed by the day's refunds, other users and other UTC days apart, batches per item;
and every submit rule gives in Lua what it gives in Python.

A Redis store stamps a submit with its own clock, so other days are reached by appending
charges and refunds dated yesterday or tomorrow, never by waiting.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.admission import Admission
from events.catalogue import CreditsCharged, CreditsGranted, CreditsRefunded
from events.daily_spend import SPENT, day_id
from events.days import DAY_SECONDS, next_utc_midnight, utc_day
from events.redis_submit import RULES, lua_function
from events.store import EventStore, SubmitReceipt
from tests.contract.test_event_store import run as run  # the fixture: every store
from tests.helpers import submitted


def _reasons(receipts: list[SubmitReceipt]) -> list[str]:
    return [r.refused.reason if r.refused else "ok" for r in receipts]


async def _spent(store: EventStore, user: str, at: float) -> str | None:
    """The user's net spend on the UTC day of `at`, as its hash holds it."""
    day, _ = await store.user(day_id(user, utc_day(at)), entries=0)
    return day.get(SPENT)


async def _grant(store: EventStore, at: float, **amounts: int) -> None:
    await store.append([CreditsGranted(user_id=u, amount=a, at=at) for u, a in amounts.items()])


def test_the_cap_refuses_past_it_exactly_and_a_refusal_charges_and_writes_nothing(run: Any) -> None:
    """Under a cap of 5: two tasks at 2 pass (4), a third is refused with the figures and the
    next UTC midnight, and leaves stream, balance and the day's count as they were; a task at 1
    still fits (5 of 5, the boundary) and then nothing does. Another user is not held back."""

    async def body(store: EventStore) -> None:
        now = time.time()
        await _grant(store, now, ann=20, bob=20)
        cap = Admission(price=2, daily_cap=5)
        assert _reasons([await store.submit(submitted(user="ann", at=now), cap) for _ in range(2)]) == [
            "ok",
            "ok",
        ]
        last, (totals, _) = await store.last_id(), await store.user("ann")
        receipt = await store.submit(submitted(user="ann", at=now), cap)
        refusal = receipt.refused
        assert refusal is not None and refusal.reason == "daily_cap", refusal
        assert (refusal.spent_today, refusal.daily_cap, refusal.price, refusal.balance) == (4, 5, 2, 16)
        decided_at = refusal.until - refusal.wait_ms / 1000
        assert refusal.until == next_utc_midnight(decided_at) and abs(decided_at - now) < 60
        assert await store.last_id() == last and (await store.user("ann"))[0] == totals
        assert await _spent(store, "ann", now) == "4"
        one = Admission(price=1, daily_cap=5)
        assert _reasons([await store.submit(submitted(user="ann", at=now), one) for _ in range(2)]) == [
            "ok",
            "daily_cap",
        ]
        assert await _spent(store, "ann", now) == "5" and (await store.user("ann"))[0]["balance"] == "15"
        assert _reasons([await store.submit(submitted(user="bob", at=now), cap) for _ in range(3)]) == [
            "ok",
            "ok",
            "daily_cap",
        ]

    run(body)


def test_concurrent_submits_and_a_batch_never_pass_the_cap(run: Any) -> None:
    """Twenty concurrent submits under a cap of 5 at 1 each: exactly five pass. A batch is
    decided item by item, each on the charges of the items before it, per user."""

    async def body(store: EventStore) -> None:
        now = time.time()
        await _grant(store, now, ann=50, bob=50, cat=50)
        cap = Admission(price=1, daily_cap=5)
        receipts = await asyncio.gather(
            *(store.submit(submitted(user="ann", at=now), cap) for _ in range(20))
        )
        assert _reasons(list(receipts)).count("ok") == 5 and await _spent(store, "ann", now) == "5"
        two = Admission(price=1, daily_cap=2)
        users = ["bob", "cat", "bob", "bob", "cat", "cat", "ann"]
        batch = await store.submit_many([submitted(user=u, at=now) for u in users], [two] * len(users))
        assert _reasons(batch) == ["ok", "ok", "ok", "daily_cap", "ok", "daily_cap", "daily_cap"]
        assert batch[3].refused is not None and batch[3].refused.spent_today == 2
        assert [(await store.user(u))[0]["balance"] for u in ("bob", "cat")] == ["48", "48"]

    run(body)


def test_a_refund_frees_room_the_same_day(run: Any) -> None:
    """At the cap, a refund made today lowers today's net spend: one more task fits, and then
    the cap holds again."""

    async def body(store: EventStore) -> None:
        now = time.time()
        await _grant(store, now, dan=10)
        cap = Admission(price=2, daily_cap=4)
        events = [submitted(user="dan", at=now) for _ in range(3)]
        assert _reasons([await store.submit(e, cap) for e in events]) == ["ok", "ok", "daily_cap"]
        refund = CreditsRefunded(user_id="dan", task_id=events[0].task_id, amount=2, reason="failed", at=now)
        await store.append([refund])
        assert await _spent(store, "dan", now) == "2"
        again = [await store.submit(submitted(user="dan", at=now), cap) for _ in range(2)]
        assert _reasons(again) == ["ok", "daily_cap"] and (await store.user("dan"))[0]["balance"] == "6"

    run(body)


def test_each_utc_day_counts_apart(run: Any) -> None:
    """Charges dated yesterday or tomorrow do not count today: yesterday's full cap leaves
    today's room whole, and tomorrow's charges wait for tomorrow."""

    async def body(store: EventStore) -> None:
        now = time.time()
        yesterday, tomorrow = now - DAY_SECONDS, now + DAY_SECONDS
        await _grant(store, now, eve=20)
        await store.append(
            [
                CreditsCharged(user_id="eve", task_id="old", amount=3, at=yesterday),
                CreditsCharged(user_id="eve", task_id="new", amount=3, at=tomorrow),
            ]
        )
        cap = Admission(price=1, daily_cap=3)
        receipts = [await store.submit(submitted(user="eve", at=now), cap) for _ in range(4)]
        assert _reasons(receipts) == ["ok", "ok", "ok", "daily_cap"]
        counts = [await _spent(store, "eve", at) for at in (yesterday, now, tomorrow)]
        assert counts == ["3", "3", "3"]
        # A refund counts on its own day: today's refund of yesterday's charge makes room today.
        await store.append([CreditsRefunded(user_id="eve", task_id="old", amount=3, reason="failed", at=now)])
        assert [await _spent(store, "eve", at) for at in (yesterday, now)] == ["3", "0"]
        assert (await store.submit(submitted(user="eve", at=now), cap)).refused is None

    run(body)


@pytest.fixture(scope="module")
def lua(store_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Valkey, to run rules as Lua."""
    client = redis.Redis.from_url(store_url)
    yield client
    client.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_submit_rule_gives_in_lua_what_it_gives_in_python(
    lua: redis.Redis, data: st.DataObject
) -> None:
    """Each rule of the submit script, as the script defines it, run by Valkey on random integers
    (zeros, bounds and negatives among them), answers what the Python function answers."""
    rules: list[Callable[..., int]] = list(RULES)
    rule = data.draw(st.sampled_from(rules))
    arity = len(inspect.signature(rule).parameters)
    numbers = st.one_of(st.integers(-3, 3), st.integers(-(2**40), 2**40))
    args = data.draw(st.lists(numbers, min_size=arity, max_size=arity), label=rule.__name__)
    call = ", ".join(f"tonumber(ARGV[{i + 1}])" for i in range(arity))
    script = f"{lua_function(rule)}\nreturn {rule.__name__}({call})"
    assert lua.eval(script, 0, *args) == rule(*args)
