"""Guarded appends in batches: one call behaves as the same appends made one after another."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from events.catalogue import (
    CreditsCharged,
    Event,
    TaskAttemptFailed,
    TaskCancelled,
    TaskDispatched,
    TaskFailed,
    TaskLateOutcomeIgnored,
    TaskRetryScheduled,
    TaskStarted,
    TaskSucceeded,
)
from events.ops_models import STATUSES
from events.redis_append import Batch
from events.redis_store import RedisEventStore
from events.store import EventStore, Expect
from tests.contract.test_event_store import Body
from tests.contract.test_event_store import run as run  # the fixture: every store
from tests.helpers import submitted

Group = tuple[Sequence[Event], Mapping[str, Expect] | None]


def _life(n: int) -> list[Group]:
    """Groups of a busy batch: submits with charges, dispatches, starts, outcomes, a stale outcome."""
    groups: list[Group] = []
    for i in range(n):
        a = submitted(user=f"u{i % 3}", at=1.0 + i)
        t = a.task_id
        groups.append(([a, CreditsCharged(user_id=a.user_id, task_id=t, amount=3, at=1.0 + i)], None))
        groups.append(
            (
                [TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=99, at=2.0)],
                {t: Expect("queued", 0)},
            )
        )
        groups.append(
            (
                [TaskStarted(task_id=t, attempt=1, pool="p", key_id="k", waited=0.25, at=2.5)],
                {t: Expect("running", 1)},
            )
        )
        if i % 2:
            ok = TaskSucceeded(
                task_id=t, attempt=1, result="r", mime_type="image/png", elapsed=0.5 + i, at=3.0
            )
            groups.append(([ok], {t: Expect("running", 1)}))
        else:
            failed = TaskAttemptFailed(task_id=t, attempt=1, error="e", retryable=True, code=500, at=3.0)
            groups.append(([failed], {t: Expect("running", 1)}))
        # The same outcome again: its guard now fails, so it is recorded as late instead.
        again = TaskSucceeded(task_id=t, attempt=1, result="r2", mime_type="image/png", elapsed=1, at=4.0)
        groups.append(([again], {t: Expect("running", 1)}))
        groups.append(
            ([TaskLateOutcomeIgnored(task_id=t, attempt=1, outcome="task.succeeded", at=4.0)], None)
        )
    return groups


async def _dump(client: Any, prefix: str) -> dict[str, Any]:
    """Every key under `prefix` and its content (stream entries without their ids)."""
    found: dict[str, Any] = {}
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = await client.type(key)
        name = key[len(prefix) :]
        if kind == "hash":
            found[name] = {f: float(v) if _number(v) else v for f, v in (await client.hgetall(key)).items()}
        elif kind == "list" and name.endswith(":log"):
            # A task's audit list holds stream ids: compare the entries they name.
            ids = await client.lrange(key, 0, -1)
            found[name] = [(await client.xrange(f"{prefix}events", i, i))[0][1] for i in ids]
        elif kind == "list":
            found[name] = await client.lrange(key, 0, -1)
        elif kind == "zset":
            found[name] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            found[name] = sorted(await client.smembers(key))
        elif kind == "stream":
            found[name] = [fields for _, fields in await client.xrange(key)]
        else:
            found[name] = await client.get(key)
    return found


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def test_a_batch_writes_exactly_what_the_same_appends_one_by_one_write(store_url: str) -> None:
    """Every key (events, audit lists, views, counters, sets) is the same after one batched call as
    after the same guarded appends made one at a time; the refused groups are the same too."""

    async def main() -> None:
        one, many = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
        single = RedisEventStore.from_url(store_url, one)
        batched = RedisEventStore.from_url(store_url, many)
        groups = _life(12)
        alone = [await single.append(events, expect) for events, expect in groups]
        together = await batched.append_many(groups)
        assert [ids is None for ids in alone] == [ids is None for ids in together]
        # A succeeded attempt refuses the repeat; a failed one still runs until the queue decides.
        assert sum(ids is None for ids in together) == 6
        assert [len(ids) for ids in together if ids] == [len(ids) for ids in alone if ids]
        client = aioredis.Redis.from_url(store_url, decode_responses=True)
        try:
            left = await _dump(client, f"{single.keys.prefix}:")
            right = await _dump(client, f"{batched.keys.prefix}:")
        finally:
            await client.aclose()
        assert left.keys() == right.keys() and len(left) > 10
        for key in left:
            assert left[key] == right[key], key
        await single.close()
        await batched.close()

    asyncio.run(main())


def _retried_then_failed_and_cancelled() -> tuple[list[Group], list[str]]:
    """A task failed, retried and failed for good (two status changes in one guarded group), and
    one cancelled with no guard; their ids."""
    a, b = submitted(user="r1", at=1.0), submitted(user="r2", at=1.0)
    t = a.task_id
    dispatch = [TaskDispatched(task_id=t, attempt=n, worker=0, lease_deadline=99, at=2.0) for n in (1, 2)]
    failed = TaskAttemptFailed(task_id=t, attempt=1, error="e", retryable=True, code=500, at=3.0)
    retry = TaskRetryScheduled(task_id=t, attempt=1, not_before=3.5, order=1.0, at=3.0)
    groups: list[Group] = [
        ([a, b], None),
        ([dispatch[0]], {t: Expect("queued", 0)}),
        ([failed, retry], {t: Expect("running", 1)}),
        ([dispatch[1]], {t: Expect("queued", 1)}),
        ([TaskFailed(task_id=t, attempt=2, error="e", at=4.0)], {t: Expect("running", 2)}),
        ([TaskCancelled(task_id=b.task_id, reason="r", at=4.0)], None),
    ]
    return groups, [t, b.task_id]


def test_a_guarded_status_change_leaves_only_the_list_its_guard_names(store_url: str) -> None:
    """A task's guard says which status list it is in, so its status change leaves that list
    only (one ZREM, not one for each other status); after guarded and unguarded changes, two in
    one group included, every task is in exactly the list of its view's status."""
    store = RedisEventStore.from_url(store_url, f"s{uuid.uuid4().hex[:8]}")
    keys = store.keys
    lists = {keys.status_tasks(s) for s in STATUSES}
    t = "0" * 32
    dispatch = TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=99, at=2.0)
    for expect, leaves in (({t: Expect("queued", 0)}, 1), (None, len(STATUSES) - 1)):
        batch = Batch()
        batch.add(keys, [dispatch], expect)
        names = [batch.keys[int(i) - 1] for n, i in itertools.pairwise(batch.items) if n == "ZREM"]
        assert len([k for k in names if k in lists]) == leaves

    async def main() -> None:
        extra, ids = _retried_then_failed_and_cancelled()
        groups = _life(6) + extra
        await store.append_many(groups)
        tasks = {e.task_id for events, _ in groups for e in events if hasattr(e, "task_id")}
        assert set(ids) <= tasks
        for task_id in tasks:
            status = await store._r.hget(keys.task(task_id), "status")
            found = {s for s in STATUSES if await store._r.zscore(keys.status_tasks(s), task_id) is not None}
            assert found == {status}, (task_id, status, found)
        assert await store._r.hget(keys.task(ids[0]), "status") == "failed"
        await store.close()

    asyncio.run(main())


def test_a_groups_guard_sees_the_groups_before_it(run: Callable[[Body], None]) -> None:
    """Within one call, a dispatch guarded on the submit before it passes, and a second dispatch of
    the same attempt fails: exactly one of two competing groups lands."""

    async def body(store: EventStore) -> None:
        a = submitted()
        t = a.task_id
        dispatch = TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=9, at=2)
        results = await store.append_many(
            [([a], None), ([dispatch], {t: Expect("queued", 0)}), ([dispatch], {t: Expect("queued", 0)})]
        )
        assert results[0] is not None and results[1] is not None and results[2] is None
        view = await store.task_view(t)
        assert view is not None and view["status"] == "running" and view["attempts"] == "1"
        assert [e.event.type for e in await store.read()] == ["task.submitted", "task.dispatched"]

    run(body)


def test_a_tasks_audit_list_holds_stream_ids_not_copies_of_its_events(store_url: str) -> None:
    """The submit's script and the append's script push the ids of the task's entries; the trail
    reads back as the events themselves, an older list's JSON lines included."""

    async def main() -> None:
        store = RedisEventStore.from_url(store_url, f"l{uuid.uuid4().hex[:8]}")
        a = submitted()
        t = a.task_id
        receipt = await store.submit(a)
        dispatched = await store.append(
            [TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=9, at=2)], {t: Expect("queued", 0)}
        )
        assert dispatched is not None
        client = aioredis.Redis.from_url(store_url, decode_responses=True)
        try:
            held = await client.lrange(store.keys.task_log(t), 0, -1)
            assert held == [receipt.id, *dispatched]
            await client.lpush(store.keys.task_log(t), '{"type":"older.line","v":1,"data":{}}')
        finally:
            await client.aclose()
        trail = await store.task_log(t)
        assert [e["type"] for e in trail] == ["older.line", "task.submitted", "task.dispatched"]
        assert trail[1]["data"]["task_id"] == t and trail[2]["data"]["attempt"] == 1
        await store.close()

    asyncio.run(main())
