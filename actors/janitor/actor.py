"""The janitor: blob retention (a task's blobs are deleted `retention_seconds` after it ended, with
an event) and the log's archiving pass (`actors.janitor.archiver`), each on a thread of its own."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

from actors.archiving import archive_of
from actors.blobs import BlobStore, blob_store
from actors.config import Config
from actors.janitor.archiver import Report, archive_once, forget_after
from actors.logs import configure
from events.archive import Archive
from events.catalogue import TERMINAL, BlobsExpired
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import EventStore

log = structlog.get_logger("genqueue.janitor")


@dataclass(slots=True)
class Archiving:
    """The archiving passes' totals, and the last failure ("" once a pass succeeds)."""

    passes: int = 0
    segments: int = 0
    adopted: int = 0
    events: int = 0
    bytes: int = 0
    trimmed: int = 0
    forgotten: int = 0
    last_error: str = ""

    def add(self, report: Report) -> None:
        """Count one pass."""
        self.passes += 1
        self.segments += report.segments
        self.adopted += report.adopted
        self.events += report.events
        self.bytes += report.bytes
        self.trimmed += report.trimmed
        self.forgotten += report.forgotten
        self.last_error = report.error


def due(
    views: Mapping[str, Mapping[str, str]],
    now: float,
    retention: float,
    written: Mapping[str, float] | None = None,
) -> tuple[list[str], list[str]]:
    """Of tasks that have blobs: those whose retention ran out (announce, then delete) and those
    announced already whose blobs are still there (delete only: a sweep stopped between the two).

    Tasks still waiting or running keep theirs. A task without a view (its read models were
    forgotten, or its submit was refused) is due when `written` holds its blobs' newest write
    time and that is `retention` ago; else it keeps them (its submit may be on its way).
    """
    announce: list[str] = []
    leftover: list[str] = []
    for task_id, view in sorted(views.items()):
        if view.get("blobs_expired_at"):
            leftover.append(task_id)
            continue
        if view.get("status") in TERMINAL:
            ended = float(view.get("finished_at") or now)
        else:
            ended = (written or {}).get(task_id, now) if not view else now
        if ended + retention <= now:
            announce.append(task_id)
    return announce, leftover


async def sweep(
    blobs: BlobStore, store: EventStore, now: float, retention: float, forgotten_after: float = 0.0
) -> list[str]:
    """Delete the blobs of every task past its retention; returns the tasks announced.

    The event goes first: a sweep that stops before the delete finishes it next time
    without a second event. With `forgotten_after` (> 0: tasks' read models are forgotten
    that long after they end), a task without a view whose blobs were last written longer
    ago than that and than `retention` is due too: it ended and was forgotten while its
    blobs were kept, or its submit was refused long ago.
    """
    ids = await asyncio.to_thread(blobs.task_ids)
    views = {t: (await store.task_view(t)) or {} for t in ids}
    written: dict[str, float] = {}
    if forgotten_after > 0:
        for task_id in (t for t, view in views.items() if not view):
            at = await asyncio.to_thread(blobs.written_at, task_id)
            if at is not None:  # `due` adds `retention`: due once both spans have passed
                written[task_id] = at + max(0.0, forgotten_after - retention)
    announce, leftover = due(views, now, retention, written)
    for task_id in announce:
        refs = await asyncio.to_thread(blobs.task_refs, task_id)
        await store.append([BlobsExpired(task_id=task_id, refs=refs, retention_seconds=retention, at=now)])
        await asyncio.to_thread(blobs.delete_task, task_id)
        log.info("blobs expired", task_id=task_id, blobs=len(refs))
    for task_id in leftover:
        await asyncio.to_thread(blobs.delete_task, task_id)
    return announce


class Janitor:
    """Sweeps the blob store every `sweep_seconds` and archives the log every `[retention]
    every_seconds`, each in a thread of its own (restarted with the actor)."""

    def __init__(self, config: Config) -> None:
        configure()
        self._config = config
        self._stop = threading.Event()
        self._swept = 0
        self._archiving = Archiving()
        if config.storage.retention_seconds > 0:
            threading.Thread(
                target=asyncio.run, args=(self._loop(),), name="blob-janitor", daemon=True
            ).start()
        if config.retention.live_seconds > 0:
            threading.Thread(
                target=asyncio.run, args=(self._archive_loop(),), name="log-archiver", daemon=True
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
                    forgotten = forget_after(self._config) if self._forgets() else 0.0
                    swept = await sweep(blobs, store, time.time(), storage.retention_seconds, forgotten)
                    self._swept += len(swept)
                except (StoreUnavailableError, OSError) as exc:
                    log.warning("blob sweep failed", error=str(exc))
                await asyncio.to_thread(self._stop.wait, storage.sweep_seconds)
        finally:
            await store.close()

    def _forgets(self) -> bool:
        """Whether finished tasks' read models are forgotten."""
        return self._config.retention.live_seconds > 0 and self._config.retention.task_seconds > 0

    async def _archive_loop(self) -> None:
        config = self._config
        blobs = blob_store(config) if config.storage.retention_seconds > 0 and self._forgets() else None
        store = RedisEventStore.from_url(config.redis.url, config.redis.namespace, max_connections=4)
        archive: Archive | None = None
        try:
            while not self._stop.is_set():
                try:
                    archive = archive or archive_of(config)
                    # A task whose blobs are still stored keeps its view until the sweep deletes them.
                    keep = frozenset(await asyncio.to_thread(blobs.task_ids)) if blobs else frozenset()
                    self._archiving.add(await archive_once(store, archive, config, time.time(), keep=keep))
                except (StoreUnavailableError, RedisError, OSError) as exc:
                    self._archiving.last_error = str(exc)
                    log.warning("archiving pass failed", error=str(exc))
                except (ValueError, ImportError) as exc:  # an archive URL fsspec cannot open
                    self._archiving.last_error = f"{type(exc).__name__}: archive not opened"
                    log.error("archive not opened; check [archive] url", error=type(exc).__name__)
                await asyncio.to_thread(self._stop.wait, config.retention.every_seconds)
        finally:
            await store.close()

    def archiving(self) -> dict[str, Any]:
        """The archiving figures since this instance started: passes, segments written and
        adopted, events and bytes archived, entries trimmed, tasks forgotten, the last error."""
        return dataclasses.asdict(self._archiving)

    def ping(self) -> int:
        """How many tasks' blobs this instance has expired."""
        return self._swept

    def stop(self) -> None:
        """End the sweeping and archiving loops."""
        self._stop.set()
