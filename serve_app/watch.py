"""Live task progress: one stream tailer per replica wakes the Server-Sent-Events watchers it concerns."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

import structlog

from events.catalogue import TaskCancelled, TaskDispatched, TaskFailed, TaskRetryScheduled, TaskSubmitted
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore

log = structlog.get_logger("genqueue.watch")

# Events that move other waiting tasks' positions.
_MOVES_QUEUE = (TaskDispatched, TaskCancelled, TaskFailed, TaskRetryScheduled, TaskSubmitted)


class Hub:
    """Tails the event stream once (XREAD BLOCK) and sets the wake-up of every watcher of a task
    that changed, and of every watcher when the queue moved (positions change)."""

    def __init__(self, store: RedisEventStore) -> None:
        self._store = store
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event that is set whenever `task_id` may have changed; starts the tailer on first use."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._tail())
        wake = asyncio.Event()
        self._watchers[task_id].add(wake)
        try:
            yield wake
        finally:
            self._watchers[task_id].discard(wake)
            if not self._watchers[task_id]:
                del self._watchers[task_id]

    async def _tail(self) -> None:
        after = await self._store.last_id()
        delay = 0.05
        while True:
            try:
                batch = await self._store.tail(after, 1000)
                delay = 0.05
            except StoreUnavailableError as exc:
                log.warning("watch tail: store unavailable", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            moved = False
            for stored in batch:
                after = stored.id
                event = stored.event
                task_id = getattr(event, "task_id", "")
                for wake in self._watchers.get(task_id, ()):
                    wake.set()
                moved = moved or isinstance(event, _MOVES_QUEUE)
            if moved:
                for wakes in self._watchers.values():
                    for wake in wakes:
                        wake.set()
