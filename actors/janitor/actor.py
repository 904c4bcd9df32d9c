"""Blob retention: a task's blobs are deleted `retention_seconds` after it ended, with an event."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping

import structlog

from actors.blobs import BlobStore, blob_store
from actors.config import Config
from actors.logs import configure
from events.catalogue import TERMINAL, BlobsExpired
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import EventStore

log = structlog.get_logger("genqueue.janitor")


def due(views: Mapping[str, Mapping[str, str]], now: float, retention: float) -> tuple[list[str], list[str]]:
    """Of tasks that have blobs: those whose retention ran out (announce, then delete) and those
    announced already whose blobs are still there (delete only: a sweep stopped between the two).

    Tasks without a view (blobs of a refused submit) and tasks still waiting or running keep theirs.
    """
    announce: list[str] = []
    leftover: list[str] = []
    for task_id, view in sorted(views.items()):
        if view.get("blobs_expired_at"):
            leftover.append(task_id)
        elif view.get("status") in TERMINAL and float(view.get("finished_at") or now) + retention <= now:
            announce.append(task_id)
    return announce, leftover


async def sweep(blobs: BlobStore, store: EventStore, now: float, retention: float) -> list[str]:
    """Delete the blobs of every task past its retention; returns the tasks announced.

    The event goes first: a sweep that stops before the delete finishes it next time
    without a second event.
    """
    ids = await asyncio.to_thread(blobs.task_ids)
    views = {t: (await store.task_view(t)) or {} for t in ids}
    announce, leftover = due(views, now, retention)
    for task_id in announce:
        refs = await asyncio.to_thread(blobs.task_refs, task_id)
        await store.append([BlobsExpired(task_id=task_id, refs=refs, retention_seconds=retention, at=now)])
        await asyncio.to_thread(blobs.delete_task, task_id)
        log.info("blobs expired", task_id=task_id, blobs=len(refs))
    for task_id in leftover:
        await asyncio.to_thread(blobs.delete_task, task_id)
    return announce


class Janitor:
    """Sweeps the blob store every `sweep_seconds` in a thread of its own (restarted with the actor)."""

    def __init__(self, config: Config) -> None:
        configure()
        self._config = config
        self._stop = threading.Event()
        self._swept = 0
        if config.storage.retention_seconds > 0:
            threading.Thread(
                target=asyncio.run, args=(self._loop(),), name="blob-janitor", daemon=True
            ).start()

    async def _loop(self) -> None:
        storage = self._config.storage
        blobs = blob_store(self._config)
        store = RedisEventStore.from_url(
            self._config.redis.url, self._config.redis.namespace, max_connections=4
        )
        try:
            while not self._stop.is_set():
                try:
                    self._swept += len(await sweep(blobs, store, time.time(), storage.retention_seconds))
                except (StoreUnavailableError, OSError) as exc:
                    log.warning("blob sweep failed", error=str(exc))
                await asyncio.to_thread(self._stop.wait, storage.sweep_seconds)
        finally:
            await store.close()

    def ping(self) -> int:
        """How many tasks' blobs this instance has expired."""
        return self._swept

    def stop(self) -> None:
        """End the sweeping loop."""
        self._stop.set()
