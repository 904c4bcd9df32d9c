"""The HTTP app over a real store, no actors: a dispatched task is queued until its call starts,
/v1/queue tells slots held from calls in flight, and pools parked for the day block submits
until their quota returns."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from events.catalogue import KeyParked, KeyTokenGranted, TaskDispatched, TaskStarted, TaskSucceeded
from events.redis_store import RedisEventStore
from serve_app.cli.burst import payload
from serve_app.http.context import Context
from serve_app.http.watch import Hub, Stream
from serve_app.http.watching import renderer, stream_messages
from tests.helpers import append_to, make_config, submitted
from tests.served import served


def test_a_dispatched_task_is_queued_until_its_call_starts_and_says_why_it_cannot_be_cancelled(
    store_url: str, data_dir: str
) -> None:
    """Three tasks: one waiting, one dispatched (queued, starting, no position), one started
    (running); /v1/queue counts 1 waiting, 1 starting, 1 running; cancelling the dispatched
    one is a 409 that says it holds a slot."""
    config = make_config(store_url, data_dir)
    now = time.time()
    waiting, handed, calling = (submitted(at=now + i) for i in range(3))
    append_to(config, [calling, handed, waiting])
    append_to(
        config,
        [
            *(
                TaskDispatched(task_id=t.task_id, attempt=1, worker=0, lease_deadline=now + 300, at=now)
                for t in (calling, handed)
            ),
            TaskStarted(task_id=calling.task_id, attempt=1, pool="p1", key_id="p1#1", at=now + 0.5),
        ],
    )
    with served(config) as app, httpx.Client(base_url=app.url, timeout=30) as client:
        views = [client.get(f"/v1/tasks/{t.task_id}").json() for t in (waiting, handed, calling)]
        shown = [(v["status"], v["stage"], v["position"]) for v in views]
        assert shown == [("queued", "waiting", 0), ("queued", "starting", None), ("running", None, None)]
        assert views[2]["started_at_iso"].endswith("Z") and views[1]["started_at_iso"] is None
        queue = client.get("/v1/queue").json()
        assert (queue["waiting"], queue["starting"], queue["running"], queue["blocked"]) == (1, 1, 1, {})
        refused = client.delete(f"/v1/tasks/{handed.task_id}")
        assert refused.status_code == 409 and "holds a slot" in refused.json()["detail"]
        refused = client.delete(f"/v1/tasks/{calling.task_id}")
        assert refused.status_code == 409 and "in flight" in refused.json()["detail"]


def test_pools_parked_for_the_day_block_submits_until_their_quota_returns(
    store_url: str, data_dir: str
) -> None:
    """Both pools parked until a given time: the waiting task says blocked until then, /readyz is
    degraded with the reason, and a submit is a 503 whose Retry-After counts down to it."""
    config = make_config(store_url, data_dir, pools=(("p1", 600, 1.0), ("p2", 600, 1.0)))
    back = time.time() + 3600
    task = submitted(at=time.time())
    parked = [
        KeyParked(pool=p, key_id=f"{p}#1", until=back + i, quota_id="", reason="", at=time.time())
        for i, p in enumerate(("p1", "p2"))
    ]
    append_to(config, [task, *parked])
    with served(config) as app, httpx.Client(base_url=app.url, timeout=30) as client:
        view = client.get(f"/v1/tasks/{task.task_id}").json()
        assert (view["stage"], view["blocked_until"]) == ("blocked", back)
        assert "daily quota" in view["blocked_reason"]
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded" and ready["blocked"]["photography"]["until"] == back
        refused = client.post("/v1/tasks", json=payload(1, "photography"))
        assert refused.status_code == 503
        assert 3590 <= int(refused.headers["retry-after"]) <= 3600
        assert refused.json()["blocked_until"] == back


def test_a_watch_stream_is_sent_every_stage_the_pools_move_a_task_through(
    store_url: str, data_dir: str
) -> None:
    """With no event of the task's own, a parked pool blocks it and its return unblocks it; a
    window filled by other tasks' grants makes it wait for quota, its own grant makes it starting:
    waiting, blocked, waiting, starting, waiting_for_quota, starting, running, succeeded."""
    config = make_config(store_url, data_dir, pools=(("p1", 60, 10.0),))
    task = submitted(at=time.time())
    append_to(config, [task])
    t = task.task_id

    def grant(task_id: str) -> KeyTokenGranted:
        return KeyTokenGranted(
            pool="p1", key_id="p1#1", task_id=task_id, attempt=1, capacity=10, window=10.0, at=time.time()
        )

    async def scenario() -> list[tuple[str, str | None]]:
        store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
        hub, ctx = Hub(store), Context(config)
        steps: list[tuple[str, str | None]] = []
        seen = asyncio.Event()

        async def collect(stream: Stream) -> None:
            async for message in stream_messages(stream, None):
                data = json.loads(message.decode().split("data: ", 1)[1].split("\n", 1)[0])
                steps.append((data["status"], data["stage"]))
                seen.set()

        async def until(step: tuple[str, str | None]) -> None:
            async with asyncio.timeout(10):
                while not steps or steps[-1] != step:
                    seen.clear()
                    await seen.wait()

        try:
            with hub.watch(t, render=renderer(ctx)) as stream:
                reader = asyncio.create_task(collect(stream))
                await until(("queued", "waiting"))
                back = time.time() + 1.0
                await store.append(
                    [KeyParked(pool="p1", key_id="p1#1", until=back, quota_id="", reason="", at=back - 1)]
                )
                await until(("queued", "blocked"))
                await until(("queued", "waiting"))  # the pool is back: no event says so
                await store.append(
                    [
                        TaskDispatched(
                            task_id=t, attempt=1, worker=0, lease_deadline=back + 300, at=time.time()
                        )
                    ]
                )
                await until(("queued", "starting"))
                await store.append([grant(f"{n:032d}") for n in range(10)])
                await until(("queued", "waiting_for_quota"))
                await store.append([grant(t)])
                await until(("queued", "starting"))
                await store.append(
                    [TaskStarted(task_id=t, attempt=1, pool="p1", key_id="p1#1", at=time.time())]
                )
                await until(("running", None))
                done = TaskSucceeded(
                    task_id=t, attempt=1, result="r", mime_type="image/png", elapsed=0.1, at=time.time()
                )
                await store.append([done])
                async with asyncio.timeout(10):
                    await reader
        finally:
            await hub.close()
            await store.close()
            await ctx.store.close()
        return steps

    steps = asyncio.run(scenario())
    assert steps == [
        ("queued", "waiting"),
        ("queued", "blocked"),
        ("queued", "waiting"),
        ("queued", "starting"),
        ("queued", "waiting_for_quota"),
        ("queued", "starting"),
        ("running", None),
        ("succeeded", None),
    ]


def test_a_stream_opened_just_after_a_key_event_no_stream_heard_shows_the_tasks_stage_after_it(
    store_url: str, data_dir: str
) -> None:
    """The replica read the pools' views, then the only key was parked while no stream was open
    on it (so its tail did not decode the event), then a stream of a waiting task opened: its
    first render may use the views read before the event, but the stream is sent the blocked
    stage soon after, with no further event."""
    config = make_config(store_url, data_dir, pools=(("p1", 60, 10.0),))
    task = submitted(at=time.time())
    append_to(config, [task])

    async def scenario() -> list[tuple[str, str | None]]:
        store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
        hub, ctx = Hub(store), Context(config)
        steps: list[tuple[str, str | None]] = []
        try:
            assert all(view.serving for view in await ctx.recent_pools())
            back = time.time() + 60
            await store.append(
                [KeyParked(pool="p1", key_id="p1#1", until=back, quota_id="", reason="", at=back - 60)]
            )
            with hub.watch(task.task_id, render=renderer(ctx)) as stream:
                async with asyncio.timeout(10):
                    async for message in stream_messages(stream, None):
                        data = json.loads(message.decode().split("data: ", 1)[1].split("\n", 1)[0])
                        steps.append((data["status"], data["stage"]))
                        if steps[-1] == ("queued", "blocked"):
                            break
        finally:
            await hub.close()
            await store.close()
            await ctx.store.close()
        return steps

    assert asyncio.run(scenario())[-1] == ("queued", "blocked")
