"""A worker's writes in batches: its attempts' events in one script call per flush, and their
send times to the key pool in one actor call per flush.

Neither waits on a timer to fill a batch: a flush starts as soon as something is pending and
nothing is in flight, and whatever arrives while one is in flight goes in the next. An idle
worker therefore writes at once, and a busy one writes once per round trip whatever its load.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from structlog.typing import FilteringBoundLogger

from actors.shell import retrying
from events.catalogue import Event
from events.store import EventStore, Expect

# At most this many groups in one script call (a call's arguments stay a few hundred KB).
MAX_GROUPS = 200
# Send reports wait at most this long to ride together (the key pool re-dates grants with them
# within its own flush time of 100 ms, so a few milliseconds here change nothing it decides).
SENDS_SECONDS = 0.005

_Pending = tuple[Sequence[Event], Mapping[str, Expect] | None, "asyncio.Future[list[str] | None]"]


class Appender:
    """Guarded appends, batched: `append` returns what `EventStore.append` would for its group."""

    def __init__(self, store: EventStore, ride_out: float, log: FilteringBoundLogger) -> None:
        self._store = store
        self._ride_out = ride_out  # how long a flush rides out a store outage
        self._log = log
        self._pending: list[_Pending] = []
        self._flushing: asyncio.Task[None] | None = None

    async def append(self, events: Sequence[Event], expect: Mapping[str, Expect] | None) -> list[str] | None:
        """Append `events` if `expect` holds; None when it did not. Raises what the store raised
        once the outage outlasted the ride-out time."""
        future: asyncio.Future[list[str] | None] = asyncio.get_running_loop().create_future()
        self._pending.append((events, expect, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_GROUPS], self._pending[MAX_GROUPS:]
            groups = [(events, expect) for events, expect, _ in batch]
            try:
                results = await retrying(
                    "event store unavailable; retrying append",
                    functools.partial(self._store.append_many, groups),
                    self._log,
                    deadline=time.monotonic() + self._ride_out,
                )
            except Exception as exc:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), ids in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(ids)


class SendReports:
    """The wire times of calls, for the key pool, in one `sent_many` call per flush."""

    def __init__(self, keypool: Any) -> None:
        self._keypool = keypool
        self._sends: list[tuple[str, int, float]] = []
        self._loop = asyncio.get_running_loop()

    def sent(self, task_id: str, attempt: int, at: float) -> None:
        """Report one call's wire time; safe from any thread."""
        self._loop.call_soon_threadsafe(self._add, (task_id, attempt, at))

    def _add(self, send: tuple[str, int, float]) -> None:
        self._sends.append(send)
        if len(self._sends) == 1:
            self._loop.call_later(SENDS_SECONDS, self._flush)

    def _flush(self) -> None:
        sends, self._sends = self._sends, []
        if sends:
            self._keypool.sent_many.remote(sends)
