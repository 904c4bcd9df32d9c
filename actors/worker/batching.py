"""A worker's writes in batches: its attempts' events in one script call per flush, their send
times to the key pool in one actor call per flush, and its token requests in one actor call
for all the attempts that ask in one turn of the event loop.

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

from actors.messages import Ask, Token
from actors.shell import retrying
from events.catalogue import Event
from events.store import EventStore, Expect

# At most this many groups in one script call (a call's arguments stay a few hundred KB).
MAX_GROUPS = 200
# At most this many asks in one `acquire_many` call: while a pool binds, each call returns with
# the next token and the rest are asked again, so a call's size is paid once per token.
MAX_ASKS = 64
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


class TokenAsks:
    """A worker's token requests to the key pool, in one `acquire_many` call for the asks made
    in one turn of the event loop (a round's attempts ask together; MAX_ASKS a call at most),
    and again for those still unanswered each time a call returns (`actors.keypool.asks`)."""

    def __init__(self, keypool: Any) -> None:
        self._keypool = keypool
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[tuple[str, int], tuple[Ask, asyncio.Future[Token]]] = {}
        self._unsent: list[tuple[str, int]] = []
        self._calls: set[asyncio.Task[None]] = set()  # in flight (the loop keeps only weak refs)

    async def acquire(self, ask: Ask) -> Token:
        """The attempt's token, or the key pool's refusal."""
        key = (ask.task_id, ask.attempt)
        future: asyncio.Future[Token] = self._loop.create_future()
        self._waiting[key] = (ask, future)
        self._ask_later([key])
        return await future

    def _ask_later(self, keys: list[tuple[str, int]]) -> None:
        if not self._unsent:
            self._loop.call_soon(self._send)
        self._unsent.extend(keys)

    def _send(self) -> None:
        keys, self._unsent = self._unsent, []
        asks = [entry[0] for key in keys if (entry := self._live(key)) is not None]
        for start in range(0, len(asks), MAX_ASKS):
            call = asyncio.ensure_future(self._call(asks[start : start + MAX_ASKS]))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    def _live(self, key: tuple[str, int]) -> tuple[Ask, asyncio.Future[Token]] | None:
        """The ask still awaited (one whose attempt gave up, e.g. cancelled, is dropped)."""
        entry = self._waiting.get(key)
        if entry is not None and entry[1].done():
            del self._waiting[key]
            return None
        return entry

    async def _call(self, asks: list[Ask]) -> None:
        try:
            answers = await self._keypool.acquire_many.remote(asks)
        except Exception as exc:
            for ask in asks:
                entry = self._waiting.pop((ask.task_id, ask.attempt), None)
                if entry is not None and not entry[1].done():
                    entry[1].set_exception(exc)
            return
        for task_id, attempt, token in answers:
            entry = self._waiting.pop((task_id, attempt), None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(token)
        if rest := [(a.task_id, a.attempt) for a in asks if (a.task_id, a.attempt) in self._waiting]:
            self._ask_later(rest)
