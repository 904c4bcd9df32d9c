"""One contract for every event store: in memory, the embedded Valkey, a secured Valkey (ACL user,
TLS) and, when reachable, Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.admission import FIRST_ROUND, NO_ROUND, place_round
from events.catalogue import (
    KeyTokenGranted,
    SnapshotTaken,
    TaskDispatched,
    TaskLateOutcomeIgnored,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    round_of,
)
from events.errors import StoreUnavailableError
from events.memory_store import MemoryEventStore
from events.redis_store import RedisEventStore
from events.store import EventStore, Expect
from tests.conftest import EXTERNAL_REDIS, external_redis_available
from tests.helpers import snapshots_of, submitted

Body = Callable[[EventStore], Awaitable[None]]


@pytest.fixture(params=["memory", "valkey", "valkey-acl", "valkey-acl-tls", "redis"])
def run(request: pytest.FixtureRequest) -> Callable[[Body], None]:
    """Runs a test body against a fresh namespace of one backend (a new one on every call, so a
    property test's examples do not see each other's tasks)."""
    backend = request.param
    if backend == "redis" and not external_redis_available():
        pytest.skip("no Redis at 127.0.0.1:6379")

    def runner(body: Body) -> None:
        namespace = f"c{uuid.uuid4().hex[:10]}"

        async def main() -> None:
            store: EventStore
            if backend == "memory":
                store = MemoryEventStore(namespace)
            elif backend == "valkey":
                store = RedisEventStore.from_url(request.getfixturevalue("store_url"), namespace)
            elif backend.startswith("valkey-acl"):
                secure = request.getfixturevalue("secure_store")
                url = secure.tls_url if backend.endswith("tls") else secure.user_url
                store = RedisEventStore.from_url(url, namespace)
            else:
                store = RedisEventStore.from_url(EXTERNAL_REDIS, namespace)
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(main())

    return runner


def test_append_returns_increasing_ids_and_reads_back_in_order(run: Callable[[Body], None]) -> None:
    """Appended events come back in append order with increasing stream ids."""

    async def body(store: EventStore) -> None:
        events = [submitted(at=float(i)) for i in range(5)]
        ids = await store.append(events[:2])
        ids2 = await store.append(events[2:])
        assert ids is not None and ids2 is not None
        all_ids = ids + ids2
        assert len(all_ids) == 5 and all_ids == sorted(all_ids, key=lambda i: tuple(map(int, i.split("-"))))
        read = await store.read()
        assert [s.event for s in read] == events
        assert [s.id for s in read] == all_ids
        assert [s.event for s in await store.read(all_ids[2])] == events[3:]
        assert [s.event for s in await store.read(count=2)] == events[:2]
        assert [s.event for s in await store.read_range(all_ids[1], all_ids[3])] == events[1:4]
        assert await store.last_id() == all_ids[-1]

    run(body)


def test_snapshots_keep_the_newest_whole_and_nothing_past_them(run: Callable[[Body], None]) -> None:
    """An actor's snapshots come back newest first, each whole however it was sent (one string or
    in parts), two covering the same id both kept, the oldest past `keep` gone; a Redis store
    keeps no other snapshot key behind (each is a key of its own, its list holds their keys),
    and still reads a document an earlier version stored in the list itself."""

    async def body(store: EventStore) -> None:
        parts = [f'{{"n":{i},"pad":"' + "x" * 50_000 + '"}' for i in range(5)]
        await store.save_snapshot("queue", "1-1", parts[0])
        await store.save_snapshot("queue", "1-2", [parts[1][:7], parts[1][7:30_000], parts[1][30_000:]])
        await store.save_snapshot("queue", "1-2", parts[2])
        assert await snapshots_of(store, "queue") == [parts[2], parts[1], parts[0]]
        await store.save_snapshot("queue", "1-3", [parts[3]], keep=3)
        await store.save_snapshot("keypool", "1-3", "{}")
        assert await snapshots_of(store, "queue") == [parts[3], parts[2], parts[1]]
        taken = [s.event for s in await store.read() if isinstance(s.event, SnapshotTaken)]
        last_two = [(e.actor, e.covers, e.bytes) for e in taken][-2:]
        assert last_two == [("queue", "1-3", len(parts[3])), ("keypool", "1-3", 2)]
        if not isinstance(store, RedisEventStore):
            return
        key = store.keys.snapshots("queue")
        assert sorted(await kept(store, key)) == sorted(await store._r.lrange(key, 0, -1))
        await store._r.rpush(key, parts[4])  # as an earlier version kept one: the document itself
        assert await snapshots_of(store, "queue") == [parts[3], parts[2], parts[1], parts[4]]
        await store.save_snapshot("queue", "1-4", parts[0], keep=2)
        assert await snapshots_of(store, "queue") == [parts[0], parts[3]]
        assert len(await kept(store, key)) == 2
        # Each is read when the reader gets to it: one dropped meanwhile is left out, unread.
        documents = store.snapshot_documents("queue")
        assert await anext(documents) == parts[0]
        await store._r.delete((await store._r.lrange(key, 0, -1))[1])
        assert [d async for d in documents] == []

    run(body)


async def kept(store: RedisEventStore, key: str) -> list[str]:
    """The keys under an actor's snapshot list's name (SCAN: KEYS is not an ACL user's)."""
    return [k async for k in store._r.scan_iter(match=f"{key}:*")]


def test_tail_waits_for_the_next_event(run: Callable[[Body], None]) -> None:
    """tail returns nothing on timeout and wakes up for an event appended while it blocks."""

    async def body(store: EventStore) -> None:
        assert await store.tail("0-0", 50) == []
        first = submitted()
        waiter = asyncio.create_task(store.tail("0-0", 5000))
        # Still blocked after 100 ms with nothing in the stream:
        done, _ = await asyncio.wait({waiter}, timeout=0.1)
        assert not done
        await store.append([first])
        got = await asyncio.wait_for(waiter, 10)
        assert [s.event for s in got] == [first]

    run(body)


def test_read_models_follow_the_events(run: Callable[[Body], None]) -> None:
    """The task view, positions, counts and the task log change in the same append as the events."""

    async def body(store: EventStore) -> None:
        a, b, c = submitted(at=1.0), submitted(at=2.0), submitted(at=3.0)
        await store.append([a, b, c])
        assert [await store.position(e.task_id) for e in (a, b, c)] == [0, 1, 2]
        counts = await store.counts()
        assert (counts.waiting, counts.running, counts.stats["submitted"]) == (3, 0, 3)
        await store.append(
            [TaskDispatched(task_id=a.task_id, attempt=1, worker=0, lease_deadline=9.0, at=4.0)]
        )
        assert await store.position(a.task_id) is None
        assert await store.position(b.task_id) == 0
        view = await store.task_view(a.task_id)
        assert view is not None and view["status"] == "running" and view["attempts"] == "1"
        await store.append(
            [
                TaskStarted(task_id=a.task_id, attempt=1, pool="p", key_id="p#1", at=4.5),
                TaskSucceeded(
                    task_id=a.task_id,
                    attempt=1,
                    result="r",
                    mime_type="image/png",
                    elapsed=0.5,
                    at=5.0,
                ),
            ]
        )
        view = await store.task_view(a.task_id)
        assert view is not None and view["status"] == "succeeded" and view["result"] == "r"
        counts = await store.counts()
        assert (counts.waiting, counts.running, counts.stats["succeeded"]) == (2, 0, 1)
        log = await store.task_log(a.task_id)
        assert [e["type"] for e in log] == [
            "task.submitted",
            "task.dispatched",
            "task.started",
            "task.succeeded",
        ]
        assert await store.task_view("missing") is None

    run(body)


def test_guarded_append_writes_nothing_when_the_view_moved_on(run: Callable[[Body], None]) -> None:
    """An append that expects a status and attempt is refused, whole, once the task has moved on."""

    async def body(store: EventStore) -> None:
        a = submitted()
        await store.append(
            [a, TaskDispatched(task_id=a.task_id, attempt=1, worker=0, lease_deadline=9, at=2)]
        )
        ok = await store.append(
            [TaskSucceeded(task_id=a.task_id, attempt=1, result="r", mime_type="image/png", elapsed=1, at=3)],
            {a.task_id: Expect("running", 1)},
        )
        assert ok is not None
        before = await store.last_id()
        refused = await store.append(
            [
                TaskSucceeded(
                    task_id=a.task_id,
                    attempt=1,
                    result="r2",
                    mime_type="image/png",
                    elapsed=1,
                    at=4,
                )
            ],
            {a.task_id: Expect("running", 1)},
        )
        assert refused is None
        assert await store.last_id() == before
        view = await store.task_view(a.task_id)
        assert view is not None and view["result"] == "r"
        await store.append(
            [TaskLateOutcomeIgnored(task_id=a.task_id, attempt=1, outcome="task.succeeded", at=5)]
        )
        assert (await store.counts()).stats["late_outcomes"] == 1

    run(body)


def test_window_calls_count_only_the_current_window(run: Callable[[Body], None]) -> None:
    """A pool's grant read model counts grants after a time and forgets those a window old."""

    async def body(store: EventStore) -> None:
        grants = [
            KeyTokenGranted(pool="p", key_id="p#1", task_id=f"t{i}", attempt=1, capacity=10, window=1.0, at=t)
            for i, t in enumerate([100.0, 100.5, 101.2, 101.4])
        ]
        await store.append(grants)
        times = await store.grant_times({"p": 100.4, "other": 0.0})
        assert times == {"p": [100.5, 101.2, 101.4], "other": []}
        # the grant at 100.0 was trimmed when the one at 101.2 arrived
        assert (await store.grant_times({"p": 0.0}))["p"] == [100.5, 101.2, 101.4]
        # a limiter of capacity 2 needs only the newest two
        assert (await store.grant_times({"p": 0.0, "other": 0.0}, {"p": 2})) == {
            "p": [101.2, 101.4],
            "other": [],
        }

    run(body)


def test_idempotency_keys_of_different_users_never_meet(run: Callable[[Body], None]) -> None:
    """User "ua:x" with key "k1" and user "ua" with key "x:k1" each get a task; a repeat gets its own."""

    async def body(store: EventStore) -> None:
        first = replace(submitted(user="ua:x"), idempotency_key="k1", digest="d")
        second = replace(submitted(user="ua"), idempotency_key="x:k1", digest="d")
        assert (await store.submit(first)).duplicate_of is None
        assert (await store.submit(second)).duplicate_of is None
        again = await store.submit(replace(submitted(user="ua"), idempotency_key="x:k1", digest="d"))
        assert again.duplicate_of == second.task_id

    run(body)


# One step of a queue's life: a submit by one of a few users, or the dispatch of the head.
Step = tuple[str, str]
STEPS = st.lists(
    st.one_of(st.sampled_from("abcd").map(lambda user: ("submit", user)), st.just(("dispatch", ""))),
    max_size=40,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_every_store_places_tasks_in_the_rounds_the_python_rule_gives(
    run: Callable[[Body], None], steps: list[Step]
) -> None:
    """Over any sequence of submits and dispatches, each submitted task's round is `place_round`
    of the current round and its user's newest round, and its position follows (round, arrival)."""

    async def body(store: EventStore) -> None:
        waiting: dict[str, tuple[int, int, float]] = {}  # task id -> (round, arrival, stored order)
        newest: dict[str, int] = {}  # user -> round of its newest task
        dispatched = FIRST_ROUND
        for arrival, (action, user) in enumerate(steps):
            if action == "dispatch":
                if waiting:
                    head = min(waiting, key=lambda t: waiting[t][:2])
                    round_, _, order = waiting.pop(head)
                    dispatch = TaskDispatched(
                        task_id=head, attempt=1, worker=0, lease_deadline=9e9, order=order, at=1.0
                    )
                    assert await store.append([dispatch]) is not None
                    dispatched = round_
                continue
            current = min(waiting.values())[0] if waiting else dispatched
            expected = place_round(current, newest.get(user, NO_ROUND))
            event = submitted(user=user, at=float(arrival))
            receipt = await store.submit(event)
            (stored,) = await store.read_range(receipt.id, receipt.id)
            assert isinstance(stored.event, TaskSubmitted) and stored.event.task_id == event.task_id
            assert round_of(stored.event.order) == expected, (steps[: arrival + 1], stored.event.order)
            waiting[event.task_id] = (expected, arrival, stored.event.order)
            newest[user] = expected
            ahead = sum(1 for r, a, _ in waiting.values() if (r, a) < (expected, arrival))
            assert receipt.position == ahead

    run(body)


def test_unreachable_redis_raises_store_unavailable() -> None:
    """A store whose server is gone raises StoreUnavailableError, not a driver error."""

    async def body() -> None:
        store = RedisEventStore.from_url("redis://127.0.0.1:1/0", "x")
        with pytest.raises(StoreUnavailableError):
            await store.append([submitted()])
        with pytest.raises(StoreUnavailableError):
            await store.read()
        assert await store.ping() is False
        await store.close()

    asyncio.run(body())
