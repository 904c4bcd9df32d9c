"""Positions among priority lanes read from the stores: the in-memory store and the embedded
Valkey give the same figures, and with no lanes the waiting set's ranks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from events.catalogue import TaskDispatched, fair_order
from events.lane_positions import Lanes, tasks_before
from events.memory_store import MemoryEventStore
from events.redis_store import RedisEventStore
from events.store import EventStore
from tests.helpers import submitted

Body = Callable[[EventStore], Awaitable[None]]
LANES = Lanes.of({"paid": 4.0, "free": 1.0}, slots=0)


@pytest.fixture(params=["memory", "valkey"])
def run(request: pytest.FixtureRequest) -> Callable[[Body], None]:
    def runner(body: Body) -> None:
        namespace = f"l{uuid.uuid4().hex[:10]}"

        async def main() -> None:
            store: EventStore = (
                MemoryEventStore(namespace)
                if request.param == "memory"
                else RedisEventStore.from_url(request.getfixturevalue("store_url"), namespace)
            )
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(main())

    return runner


def task(lane: str, n: int) -> str:
    return f"{lane or 'old'}{n:04d}".ljust(32, "0")


async def fill(store: EventStore, older: int = 0) -> tuple[list[str], list[str], list[str]]:
    """`older` tasks of no lane first (from before lanes), then 20 free tasks, then 5 paid ones,
    each in its own user's first round, in that order."""
    made: dict[str, list[str]] = {"": [], "free": [], "paid": []}
    n = 0
    for lane, count in (("", older), ("free", 20), ("paid", 5)):
        for _ in range(count):
            n += 1
            event = replace(
                submitted(task(lane, n), at=float(n), user=f"u{n}"), order=fair_order(1, n), lane=lane
            )
            await store.append([event])
            made[lane].append(event.task_id)
    return made[""], made["free"], made["paid"]


def test_positions_count_the_tasks_that_start_first_across_lanes(run: Callable[[Body], None]) -> None:
    assert LANES is not None

    async def body(store: EventStore) -> None:
        _, free, paid = await fill(store)
        # Without lanes: the rank in the queue, as before.
        assert await store.position(paid[0]) == 20
        # With lanes: paid (weight 4) goes first; a free task waits for 4 paid ones per turn.
        assert await store.position(paid[0], LANES) == 0
        assert await store.position(paid[4], LANES) == 4 + 1
        assert await store.position(free[0], LANES) == 4
        assert await store.position(free[3], LANES) == 3 + 5
        view, position = await store.task_view_and_position(free[1], LANES)
        assert view is not None and view["lane"] == "free" and position == 1 + 5
        assert await store.positions([paid[1], free[19], "0" * 32], LANES) == [1, 19 + 5, None]
        views, ranks = await store.task_views([free[2], paid[2]], LANES)
        assert [v["lane"] for v in views] == ["free", "paid"] and ranks == [2 + 5, 2]
        # A dispatched paid task leaves its lane's set: the figures follow.
        await store.append(
            [TaskDispatched(task_id=paid[0], attempt=1, worker=0, lease_deadline=9.0, lane="paid", at=30.0)]
        )
        assert await store.position(paid[0], LANES) is None
        assert await store.position(free[0], LANES) == 4
        assert await store.position(free[1], LANES) == 1 + 4

    run(body)


def test_older_tasks_of_no_lane_ride_a_lane_of_weight_one(run: Callable[[Body], None]) -> None:
    assert LANES is not None

    async def body(store: EventStore) -> None:
        older, free, paid = await fill(store, older=3)
        waiting = {"paid": 5, "free": 20, "": 3}
        assert await store.position(older[2], LANES) == tasks_before("", 2, waiting, LANES) == 2 + 3 + 5
        assert await store.position(free[0], LANES) == tasks_before("free", 0, waiting, LANES) == 1 + 4
        assert await store.position(paid[0], LANES) == 0

    run(body)


def test_the_fanout_read_gives_lane_positions(store_url: str) -> None:
    """`watched`, the SSE fan-out's one MULTI/EXEC, ranks the tasks among the lanes."""
    assert LANES is not None

    async def main() -> None:
        store = RedisEventStore.from_url(store_url, f"l{uuid.uuid4().hex[:10]}")
        try:
            _, free, paid = await fill(store)
            views, ranks, head, counts = await store.watched([free[0]], [free[0], paid[3]], 0, LANES)
            assert views[0]["lane"] == "free" and ranks == [4, 3 + 1] and head == [] and counts.waiting == 25
            _, ranks, head, _ = await store.watched([], [free[0]], 2)
            assert ranks == [0] and head == free[:2]
        finally:
            await store.close()

    asyncio.run(main())
