"""SSE fan-out: one replica's hub feeds hundreds of task streams, reading the store once per
refresh for all of them, so a queue move costs Redis the same with 200 watchers as with 10."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import httpx

from actors.config import Config
from events.catalogue import Event, TaskDispatched, TaskStarted, TaskSubmitted, TaskSucceeded
from events.redis_store import RedisEventStore
from serve_app.http.context import Context
from serve_app.http.watch import Hub, Stream
from serve_app.http.watching import KEEPALIVE, renderer, stream_messages
from tests.helpers import append_to, make_config, submitted
from tests.served import served

WATCHERS = 200
MOVES = 4
DEADLINE = 60.0


def fanout_config(store_url: str, data_dir: str) -> Config:
    """Tokens off (one admin caller holds every stream), no cap on its streams."""
    base = make_config(store_url, data_dir)
    return replace(base, limits=replace(base.limits, max_streams_per_service_token=0))


def queued(first: float, count: int) -> list[TaskSubmitted]:
    """`count` waiting tasks in queue order, the first submitted at `first`."""
    return [submitted(at=first + i) for i in range(count)]


def dispatched(task_id: str) -> TaskDispatched:
    """The queue gave the task a slot."""
    now = time.time()
    return TaskDispatched(task_id=task_id, attempt=1, worker=0, lease_deadline=now + 600, at=now)


def started(task_id: str) -> TaskStarted:
    """The task's attempt holds a token and its upstream call starts."""
    return TaskStarted(task_id=task_id, attempt=1, pool="p1", key_id="p1#1", at=time.time())


def succeeded(task_id: str) -> TaskSucceeded:
    """The task's attempt made an image."""
    return TaskSucceeded(
        task_id=task_id,
        attempt=1,
        result=f"tasks/{task_id}/out.png",
        mime_type="image/png",
        elapsed=0.1,
        at=time.time(),
    )


class Fleet:
    """Open watch streams over HTTP and every message each was sent, with one condition that
    each new message (and each stream's end) notifies."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.heard = asyncio.Condition()
        self.messages: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.ended: set[str] = set()
        self._follows: list[asyncio.Task[None]] = []

    def watch(self, task_ids: Sequence[str], last_event_id: str | None = None) -> None:
        """Open a stream of each task (the newest one per task is the one recorded)."""
        for task_id in task_ids:
            self.messages[task_id] = []
            self.ended.discard(task_id)
            self._follows.append(asyncio.create_task(self._follow(task_id, last_event_id)))

    async def _follow(self, task_id: str, last_event_id: str | None) -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        async with self.client.stream("GET", f"/v1/tasks/{task_id}/watch", headers=headers) as r:
            assert r.status_code == 200, await r.aread()
            fields: dict[str, str] = {}
            async for line in r.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.strip()
                elif "id" in fields:
                    self.messages[task_id].append((fields.pop("id"), json.loads(fields["data"])))
                    async with self.heard:
                        self.heard.notify_all()
                else:
                    fields = {}  # a keep-alive comment
        async with self.heard:
            self.ended.add(task_id)
            self.heard.notify_all()

    def last(self, task_id: str) -> dict[str, Any] | None:
        """The newest view the task's stream was sent."""
        sent = self.messages[task_id]
        return sent[-1][1] if sent else None

    async def until(self, check: Callable[[], bool], what: str) -> None:
        """Wait until `check()` holds, re-checked on every message; fail after DEADLINE."""
        async with self.heard:
            try:
                await asyncio.wait_for(self.heard.wait_for(check), DEADLINE)
            except TimeoutError:
                raise AssertionError(f"not within {DEADLINE} s: {what}") from None

    async def close(self) -> None:
        """Close every stream still open."""
        for follow in self._follows:
            follow.cancel()
        await asyncio.gather(*self._follows, return_exceptions=True)
        self._follows.clear()


async def append(config: Config, events: Sequence[Event]) -> None:
    """Append events in one atomic write."""
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    try:
        await store.append(events)
    finally:
        await store.close()


def at_positions(fleet: Fleet, task_ids: Sequence[str], first: int) -> Callable[[], bool]:
    """Whether the i-th task's stream last said: queued at position `first + i`."""

    def check() -> bool:
        views = [fleet.last(t) for t in task_ids]
        return all(v is not None and v["position"] == first + i for i, v in enumerate(views))

    return check


def test_two_hundred_watchers_each_see_their_tasks_moves_and_changes(store_url: str, data_dir: str) -> None:
    """Each of 200 streams on one replica is sent its own task's every queue move, stage and state
    change, with message ids `<events seen>-<position>-<stage>`, and ends after the terminal
    state; a stream resumed with Last-Event-ID is sent only what changed since."""
    config = fanout_config(store_url, data_dir)
    ahead, watched = queued(1.0, 3), queued(100.0, WATCHERS)
    append_to(config, [*ahead, *watched])
    ids = [t.task_id for t in watched]

    async def scenario(url: str) -> Fleet:
        limits = httpx.Limits(max_connections=WATCHERS + 10)
        async with httpx.AsyncClient(base_url=url, timeout=DEADLINE, limits=limits) as client:
            fleet = Fleet(client)
            fleet.watch(ids)
            await fleet.until(at_positions(fleet, ids, 3), "every stream's first view")
            for moved, filler in enumerate(ahead, start=1):
                await append(config, [dispatched(filler.task_id)])
                await fleet.until(at_positions(fleet, ids, 3 - moved), f"move {moved} seen")
            # A reconnect of the first task's stream, last sent before the last move: it is
            # sent the position now, and nothing it had been sent before.
            resumed = Fleet(client)
            resumed.watch(ids[:1], last_event_id="1-1")
            await resumed.until(lambda: bool(resumed.messages[ids[0]]), "the resumed stream's first message")
            await append(config, [dispatched(t) for t in ids])
            await fleet.until(lambda: all(fleet.last(t)["stage"] == "starting" for t in ids), "starting")
            await append(config, [started(t) for t in ids])
            await fleet.until(lambda: all(fleet.last(t)["status"] == "running" for t in ids), "running")
            await append(config, [succeeded(t) for t in ids])
            await fleet.until(lambda: fleet.ended >= set(ids), "every stream ended")
            await resumed.until(lambda: resumed.ended == {ids[0]}, "the resumed stream ended")
            assert [plain(m) for m, _ in resumed.messages[ids[0]]] == ["1-0-waiting", "2--starting", "3", "4"]
            return fleet

    with served(config) as app:
        fleet = asyncio.run(scenario(app.url))
    for i, task_id in enumerate(ids):
        sent = fleet.messages[task_id]
        # A queued task's message ids end with when the update was made (ms since the epoch).
        assert all(re.fullmatch(r"\d+-\d*-[a-z_]+\.\d{13}", m) for m, _ in sent[:5]), sent
        assert [plain(m) for m, _ in sent] == [
            f"1-{i + 3}-waiting",
            f"1-{i + 2}-waiting",
            f"1-{i + 1}-waiting",
            f"1-{i}-waiting",
            "2--starting",
            "3",
            "4",
        ]
        assert [v["status"] for _, v in sent] == ["queued"] * 5 + ["running", "succeeded"]
        assert all(v["task_id"] == task_id for _, v in sent)
        assert all(v["eta_seconds"] is not None for _, v in sent[:4]) and sent[-1][1]["eta_seconds"] is None


def plain(message_id: str) -> str:
    """A message id without the time a queued task's stage carries."""
    return re.sub(r"\.\d+$", "", message_id)


async def commands(config: Config) -> dict[str, int]:
    """Calls per command the store's server has answered (INFO itself left out)."""
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    try:
        info: dict[str, Any] = await store._r.info("commandstats")
    finally:
        await store.close()
    return {k: int(v["calls"]) for k, v in info.items() if k != "cmdstat_info"}


def test_redis_commands_per_queue_move_do_not_grow_with_the_watchers(store_url: str, data_dir: str) -> None:
    """The Valkey commands that a queue move costs (INFO commandstats, until every stream was
    sent its new position) with 200 streams open stay within a small constant of those with 10."""
    config = fanout_config(store_url, data_dir)
    ahead, few, many = queued(1.0, 2 * MOVES), queued(100.0, 10), queued(1000.0, WATCHERS)
    append_to(config, [*ahead, *few, *many])

    async def cost(
        client: httpx.AsyncClient, ids: list[str], first: int, fillers: list[TaskSubmitted]
    ) -> int:
        fleet = Fleet(client)
        fleet.watch(ids)
        await fleet.until(at_positions(fleet, ids, first), "every stream's first view")
        before = await commands(config)
        for moved, filler in enumerate(fillers, start=1):
            await append(config, [dispatched(filler.task_id)])
            await fleet.until(at_positions(fleet, ids, first - moved), f"move {moved} seen")
        after = await commands(config)
        await fleet.close()
        spent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
        print(f"{len(ids)} watchers, {MOVES} moves: {spent}")
        return sum(spent.values())

    async def scenario(url: str) -> tuple[int, int]:
        limits = httpx.Limits(max_connections=WATCHERS + 10)
        async with httpx.AsyncClient(base_url=url, timeout=DEADLINE, limits=limits) as client:
            with_few = await cost(client, [t.task_id for t in few], 2 * MOVES, ahead[:MOVES])
            with_many = await cost(client, [t.task_id for t in many], MOVES + len(few), ahead[MOVES:])
            return with_few, with_many

    with served(config) as app:
        with_few, with_many = asyncio.run(scenario(app.url))
    print(
        f"commands per move: {with_few / MOVES:.1f} with 10 streams, {with_many / MOVES:.1f} with {WATCHERS}"
    )
    assert with_many <= with_few + 12 * MOVES


def test_a_tasks_own_change_is_sent_at_once_while_moves_wait_for_the_next_refresh(
    store_url: str, data_dir: str
) -> None:
    """With positions refreshed at most once a minute, a second queue move is held back while a
    watched task's own dispatch reaches its stream within seconds."""
    config = fanout_config(store_url, data_dir)
    first, second, mine, other = queued(1.0, 4)
    append_to(config, [first, second, mine, other])

    async def scenario() -> tuple[Stream, Stream]:
        store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
        hub = Hub(store, refresh_seconds=60.0)
        ctx = Context(config)
        render = renderer(ctx)

        async def until(stream: Stream, check: Callable[[Stream], bool]) -> None:
            async with asyncio.timeout(10):
                while not check(stream):
                    stream.wake.clear()
                    await stream.wake.wait()

        try:
            with hub.watch(mine.task_id, render=render) as a, hub.watch(other.task_id, render=render) as b:
                for stream, position in ((a, 2), (b, 3)):
                    await until(stream, lambda s, p=position: s.update is not None and s.update.position == p)
                await append(config, [dispatched(first.task_id)])  # positions were never read: at once
                for stream, position in ((a, 1), (b, 2)):
                    await until(stream, lambda s, p=position: s.update is not None and s.update.position == p)
                await append(config, [dispatched(second.task_id)])
                await append(config, [dispatched(mine.task_id)])
                await until(
                    a,
                    lambda s: (
                        s.update is not None
                        and s.update.view is not None
                        and s.update.view.stage == "starting"
                    ),
                )
                return a, b
        finally:
            await hub.close()
            await store.close()
            await ctx.store.close()

    mine_stream, other_stream = asyncio.run(scenario())
    assert mine_stream.update is not None and mine_stream.update.seen == 2
    # The other task moved up twice by now, but its stream still holds the position of the
    # last refresh: the next one is a minute away.
    assert other_stream.update is not None and other_stream.update.position == 2


def test_a_stream_with_nothing_to_say_is_sent_keepalive_comments(store_url: str, data_dir: str) -> None:
    """A stream whose task does not change is sent its view once and a comment every keep-alive
    period (here: every turn of the hub's tail), from one timer of the hub's."""
    config = fanout_config(store_url, data_dir)
    (task,) = queued(1.0, 1)
    append_to(config, [task])

    async def scenario() -> list[bytes]:
        store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
        hub = Hub(store, keepalive_seconds=0.0)
        ctx = Context(config)
        try:
            with hub.watch(task.task_id, render=renderer(ctx)) as stream:
                messages = stream_messages(stream, None)
                async with asyncio.timeout(10):
                    sent = [await anext(messages) for _ in range(4)]
                await messages.aclose()
                return sent
        finally:
            await hub.close()
            await store.close()
            await ctx.store.close()

    sent = asyncio.run(scenario())
    views = [m for m in sent if m != KEEPALIVE]
    assert (
        len(views) == 1
        and views[0].startswith(b"event: task\ndata: {")
        and re.search(rb"\nid: 1-0-waiting\.\d{13}\n\n$", views[0])
    )
    assert sent.count(KEEPALIVE) == 3
