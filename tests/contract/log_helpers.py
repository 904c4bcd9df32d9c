"""What the log-retention tests share: a config, a store, finished tasks, snapshots, the whole log."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from actors.config import ArchiveConfig, Config, RetentionConfig, StorageConfig
from events import log_reader
from events.archive import Archive, Entry
from events.catalogue import TaskDispatched, TaskSucceeded
from events.redis_store import RedisEventStore
from events.store import EventStore
from tests.helpers import submitted


def config_of(segment_events: int = 50, live: float = 1.0, task: float = 0.0, blobs: float = 0.0) -> Config:
    """A config whose retention and archive settings are the test's."""
    return replace(
        Config(),
        retention=RetentionConfig(live_seconds=live, task_seconds=task, every_seconds=1.0),
        archive=ArchiveConfig(segment_events=segment_events),
        storage=StorageConfig(retention_seconds=blobs),
    )


def run(store_url: str, body: Callable[[RedisEventStore], Awaitable[None]]) -> None:
    """Run `body` on a store of a fresh namespace."""

    async def main() -> None:
        store = RedisEventStore.from_url(store_url, f"a{uuid.uuid4().hex[:10]}")
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


async def lives(store: EventStore, n: int, at: float = 1000.0, user: str = "u1") -> list[str]:
    """`n` tasks submitted, dispatched and succeeded at `at` (three events each): their ids."""
    ids = []
    for _ in range(n):
        task = replace(submitted(at=at, user=user), token_id="tok1")
        t = task.task_id
        await store.append(
            [
                task,
                TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=at + 60, at=at),
                TaskSucceeded(task_id=t, attempt=1, result="r", mime_type="image/png", elapsed=1.0, at=at),
            ]
        )
        ids.append(t)
    return ids


async def snapshots(store: RedisEventStore, covers: str | None = None) -> str:
    """Both actors' snapshots, covering `covers` (default: the newest event)."""
    covers = covers or await store.last_id()
    for actor in ("queue", "keypool"):
        await store.save_snapshot(actor, covers, "{}")
    return covers


async def whole_log(store: RedisEventStore, archive: Archive) -> list[Entry]:
    """Every entry, archive then live, as `log_reader.pages` gives them."""
    return [(str(i), list(f)) async for page in log_reader.pages(store, archive) for i, f in page]


def entries(page: list[list[Any]]) -> list[Entry]:
    """`read_flat`'s rows as archive entries."""
    return [(str(i), list(f)) for i, f in page]


def later() -> float:
    """A `now` at which every event so far is older than a live second."""
    return time.time() + 2.0
