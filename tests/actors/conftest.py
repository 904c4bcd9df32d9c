"""Actor-test fixtures: a running set of genqueue actors on the shared local Ray."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray

from actors import factory
from actors.blobs import blob_store, task_blob
from actors.config import Config
from actors.providers.images import sample_selfie
from events.catalogue import TERMINAL, CreditsCharged, CreditsGranted, Event, StoredEvent, TaskSubmitted
from events.redis_store import RedisEventStore
from serve_app.runtime import resolve
from tests.helpers import eventually, make_config


class Cluster:
    """Handles to one namespace's actors plus direct access to its event store."""

    def __init__(self, config: Config, handles: dict[str, Any]) -> None:
        self.config = config
        self.handles = handles
        self.blobs = blob_store(config)
        self._stocked = False

    def _run(self, fn: Callable[[RedisEventStore], Any]) -> Any:
        async def main() -> Any:
            store = RedisEventStore.from_url(self.config.redis.url, self.config.redis.namespace)
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(main())

    def submit(
        self, n: int, user: str = "u", deadline_seconds: float = 0.0, price: int = 0, lane: str = ""
    ) -> list[str]:
        """Store inputs and append n task.submitted events, as the HTTP layer does; with a
        `price`, each is charged that (granted first), and with `deadline_seconds`, each has
        a deadline that long after its submit. Each rides `lane`; a `user` ending in "*" gives
        each task a user of its own (that prefix and its number)."""
        events: list[Event] = []
        for i in range(n):
            at = time.time()
            event = TaskSubmitted(
                task_id=f"{time.time_ns():x}{i:04d}".ljust(32, "0")[:32],
                user_id=f"{user[:-1]}{i}" if user.endswith("*") else user,
                kind="photography",
                prompt="p",
                inputs={"person": task_blob("x", "person.png")},
                deadline=at + deadline_seconds if deadline_seconds else 0.0,
                lane=lane,
                at=at,
            )
            events.append(event)
            if price:
                events += [
                    CreditsGranted(user_id=event.user_id, amount=price, at=at),
                    CreditsCharged(user_id=event.user_id, task_id=event.task_id, amount=price, at=at),
                ]
        if not self._stocked:
            # Written once: a blob is never rewritten while a task may read it (a reader could
            # see it half written, as the blob store's contract says).
            self.blobs.put(task_blob("x", "person.png"), sample_selfie(1))
            self._stocked = True
        self._run(lambda s: s.append(events))
        return [e.task_id for e in events if isinstance(e, TaskSubmitted)]

    def corrupt_newest_snapshot(self, actor: str, every: bool = False) -> None:
        """Push an undecodable document in front of an actor's snapshots (or make all undecodable)."""

        async def corrupt(store: RedisEventStore) -> None:
            key = store.keys.snapshots(actor)
            if every:
                count = await store._r.llen(key)
                for i in range(count):
                    await store._r.lset(key, i, "not json")
            await store._r.lpush(key, '{"v": 1, "tasks": "broken')

        self._run(corrupt)

    def log(self) -> list[StoredEvent]:
        """The whole event log."""
        result: list[StoredEvent] = self._run(lambda s: s.read_range())
        return result

    def views(self, ids: list[str]) -> dict[str, dict[str, str]]:
        """Task views by id."""

        async def get(store: RedisEventStore) -> dict[str, dict[str, str]]:
            return {t: (await store.task_view(t)) or {} for t in ids}

        result: dict[str, dict[str, str]] = self._run(get)
        return result

    def succeeded(self) -> int:
        """How many tasks have succeeded, from the counters read model."""

        async def count(store: RedisEventStore) -> int:
            return int((await store.counts()).stats.get("succeeded", 0))

        result: int = self._run(count)
        return result

    def crash(self, handle: Any) -> None:
        """Kill an actor as a crash would (Ray restarts it) and wait until a new process answers."""
        old = ray.get(handle.pid.remote(), timeout=30)
        ray.kill(handle, no_restart=False)

        def new_process() -> bool:
            try:
                return bool(ray.get(handle.pid.remote(), timeout=30) != old)
            except ray.exceptions.RayActorError:
                return False

        eventually(new_process, timeout=60, what="a restarted actor process")

    def ended(self, ids: list[str]) -> bool:
        """Whether every task has a terminal status."""
        return all(v.get("status") in TERMINAL for v in self.views(ids).values())


@pytest.fixture
def make_cluster(ray_session: None, store_url: str, data_dir: str) -> Iterator[Callable[..., Cluster]]:
    """Start genqueue actors for a config built from keyword arguments; stopped at teardown."""
    started: list[Config] = []

    def make(redis_url: str | None = None, **kwargs: Any) -> Cluster:
        config = resolve(make_config(redis_url or store_url, data_dir, **kwargs))
        started.append(config)
        return Cluster(config, factory.start(config))

    yield make
    for config in started:
        factory.stop(config)
