"""The QueueActor's snapshot taken off its loop: a shallow copy on the loop, serialised in a thread.

Every value the state holds per task (`TaskEntry`, `Lease`, `EndedAttempt`, `PendingWebhook`)
is frozen and replaced on change, so copying the dicts that hold them (a few milliseconds at
100,000 tasks) gives a state that later events cannot touch. The copy is then written out in
chunks from a thread, letting the loop thread take the interpreter between chunks: dispatch
never waits for a whole serialisation.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from dataclasses import replace

import msgspec
import structlog
from sortedcontainers import SortedList

from actors.queue.state import QueueState, snapshot
from actors.shell import Cadence
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore

log = structlog.get_logger("genqueue.queue")

# Entries serialised per chunk: well under a millisecond of work each.
CHUNK = 500
_encode = msgspec.json.Encoder().encode


class Snapshots:
    """When the QueueActor snapshots (`cadence`) and the one being written: the state is copied
    on the loop (milliseconds), then written out in a thread while the loop goes on."""

    def __init__(self, store: RedisEventStore, actor: str, cadence: Cadence) -> None:
        self.cadence = cadence
        self._store = store
        self._actor = actor
        self._running: asyncio.Future[str] | None = None

    def maybe(self, state: QueueState, settled: bool) -> asyncio.Future[str] | None:
        """Start a snapshot of `state` when one is due and none is being written, and the state
        is `settled` (no own events applied ahead of the tail: it is then a prefix of the
        stream). The running snapshot's future (its covering id, "" if skipped), or None."""
        if self._running is not None and not self._running.done():
            return self._running
        if not settled or not self.cadence.due(time.monotonic()):
            return None
        job = self._save(frozen_copy(state), places(state), state.last_id)
        self._running = asyncio.ensure_future(job)
        return self._running

    async def written(self) -> None:
        """Return once the snapshot being written (if any) is done."""
        if self._running is not None:
            await asyncio.wait([self._running])

    async def take(self, state: QueueState, settled: bool) -> str:
        """A snapshot now (after `written`): the stream id it covers, "" if none was taken."""
        self.cadence.force()
        running = self.maybe(state, settled)
        return await running if running is not None else ""

    async def _save(self, copy: QueueState, waiting: list[tuple[float, int, str]], covers: str) -> str:
        try:
            text = await asyncio.to_thread(write, copy, waiting)
        except (ValueError, TypeError, RecursionError):
            log.exception("snapshot skipped: the state could not be serialised", actor=self._actor)
            self.cadence.taken(time.monotonic())
            return ""
        try:
            await self._store.save_snapshot(self._actor, covers, text)
        except StoreUnavailableError as exc:
            log.warning("snapshot not saved: the event store is unavailable", error=str(exc))
            return ""
        self.cadence.taken(time.monotonic())
        return covers


def frozen_copy(state: QueueState) -> QueueState:
    """A copy of `state` that no later `apply` changes (shares only frozen values)."""
    return replace(
        state,
        tasks=dict(state.tasks),
        queue=SortedList(),  # carried in `places` below: SortedList copies are slower than a list
        not_before=dict(state.not_before),
        running=dict(state.running),
        to_decide=dict(state.to_decide),
        outcomes={bucket: list(counts) for bucket, counts in state.outcomes.items()},
        tiers={pool: {b: list(c) for b, c in buckets.items()} for pool, buckets in state.tiers.items()},
        deadlines=SortedList(),  # derived from the tasks at a restore; not in the document
        lanes={},  # derived from the queue at a restore; not in the document
        alerts=dict(state.alerts),
        parked=dict(state.parked),
        disabled=dict(state.disabled),
        webhooks=dict(state.webhooks),
    )


def places(state: QueueState) -> list[tuple[float, int, str]]:
    """The waiting tasks' places, copied (the queue is a SortedList that `apply` changes)."""
    return list(state.queue)


def write(copy: QueueState, waiting: list[tuple[float, int, str]]) -> list[str]:
    """`document`, for a thread: with the objects alive now frozen out of the collector and the
    collector paused until it is done, so that no full collection over the whole state (tens
    of milliseconds at 100,000 tasks) lands in the middle and holds the loop thread."""
    gc.freeze()
    paused = gc.isenabled()
    gc.disable()
    try:
        return document(copy, waiting)
    finally:
        if paused:
            gc.enable()


def document(copy: QueueState, waiting: list[tuple[float, int, str]]) -> list[str]:
    """The snapshot document of `copy` with the queue `waiting`: what `json.dumps(snapshot(state))`
    gives, read back, in parts (joined by the store), each built holding the interpreter briefly.

    The entries are written by msgspec straight from their structs (a tenth of the time of a
    dict each through the standard encoder); their text is UTF-8 rather than escapes, and their
    numbers are finite (places, times, counts and integer options).
    """
    head = snapshot(replace(copy, tasks={}, queue=SortedList()))
    del head["tasks"], head["queue"]
    parts = ['{"tasks":[']
    entries = list(copy.tasks.values())
    for start in range(0, len(entries), CHUNK):
        tasks = _encode(entries[start : start + CHUNK])
        parts.append(("," if start else "") + tasks.decode()[1:-1])
        time.sleep(0)  # let the loop thread run
    parts.append('],"queue":[')
    for start in range(0, len(waiting), CHUNK * 4):
        queue = _encode(waiting[start : start + CHUNK * 4])
        parts.append(("," if start else "") + queue.decode()[1:-1])
        time.sleep(0)
    parts.append("],")
    parts.append(json.dumps(head, separators=(",", ":"))[1:])
    return parts
