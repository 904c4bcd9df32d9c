"""The actors' shell kit: store retries with backoff, recovery from snapshot plus replay, snapshot cadence."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from structlog.typing import FilteringBoundLogger

from events import log_reader
from events.archive import Archive
from events.catalogue import StoredEvent
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import EventStore

T = TypeVar("T")
S = TypeVar("S")

FIRST_DELAY = 0.05
MAX_DELAY = 2.0
REPLAY_PAGE = 10_000  # a store other than Redis (the Redis log is read in log_reader's pages)
# What a snapshot document may raise when it is unreadable (json.JSONDecodeError is a ValueError).
UNREADABLE = (ValueError, KeyError, TypeError)


def next_delay(delay: float) -> float:
    """The wait after `delay`: doubled, at most MAX_DELAY."""
    return min(MAX_DELAY, delay * 2)


class Backoff:
    """The wait between tries of a store call: FIRST_DELAY doubling to MAX_DELAY, `reset` after a success."""

    __slots__ = ("delay",)

    def __init__(self) -> None:
        self.delay = FIRST_DELAY

    def reset(self) -> None:
        """Start again from the shortest wait (the last try worked)."""
        self.delay = FIRST_DELAY

    async def wait(self) -> None:
        """Sleep the current delay, then lengthen the next one."""
        await asyncio.sleep(self.delay)
        self.delay = next_delay(self.delay)


async def retrying(
    what: str,
    step: Callable[[], Awaitable[T]],
    log: FilteringBoundLogger,
    *,
    deadline: float | None = None,
) -> T:
    """`await step()` until it no longer raises StoreUnavailableError, logging `what` before each wait.

    With a `deadline` (a `time.monotonic()` value) the error is raised instead once the
    next wait would end past it. Only a step that is safe to repeat belongs here.
    """
    backoff = Backoff()
    while True:
        try:
            return await step()
        except StoreUnavailableError as exc:
            if deadline is not None and time.monotonic() + backoff.delay > deadline:
                raise
            log.warning(what, error=str(exc), delay=backoff.delay)
            await backoff.wait()


async def newest_snapshot(
    store: EventStore, actor: str, load: Callable[[Any], S], log: FilteringBoundLogger
) -> S | None:
    """The newest of `actor`'s snapshots that `load` can read (from its parsed JSON), or None.

    `load` raises one of UNREADABLE for a document it cannot use; that one is skipped.
    """
    async with contextlib.aclosing(store.snapshot_documents(actor)) as documents:
        async for document in documents:
            try:
                return load(parse_document(document))
            except UNREADABLE as exc:
                log.warning("snapshot skipped", actor=actor, error=str(exc)[:200])
    return None


def parse_document(document: str) -> Any:
    """A snapshot document parsed: by msgspec (at 20,000 tasks a third of the standard parser's
    time), or by the standard parser where the document holds what strict JSON has no words
    for and the standard encoder writes (NaN, Infinity); ValueError for one that is not JSON."""
    try:
        return msgspec.json.decode(document)
    except msgspec.DecodeError:
        return json.loads(document)


async def replay(
    store: EventStore, after: str, fold: Callable[[StoredEvent], object], archive: Archive | None = None
) -> tuple[str, int]:
    """Feed every event after `after` to `fold`, in log order; returns the last id read and the count.

    A Redis store's log is read whole, the archive's segments before the live stream
    (`events.log_reader`; ArchiveError when a part it needs is missing or breaks the chain).
    """
    count = 0
    if isinstance(store, RedisEventStore):
        # A fold only grows its state: the cycle collector would walk it again and again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            async for page in log_reader.events(store, archive, after):
                for stored in page:
                    fold(stored)
                after = page[-1].id
                count += len(page)
        finally:
            if collecting:
                gc.enable()
        return after, count
    while batch := await store.read(after, count=REPLAY_PAGE):
        for stored in batch:
            fold(stored)
        after = batch[-1].id
        count += len(batch)
    return after, count


@dataclass(frozen=True, slots=True)
class Recovered(Generic[S]):
    """A state rebuilt at start-up, and where it came from."""

    state: S
    covers: str  # the stream id the snapshot covered ("0-0": no snapshot)
    replayed: int  # events read after it
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The figures an actor reports about its last start-up."""
        return {"snapshot": self.covers, "replayed": self.replayed, "seconds": round(self.seconds, 3)}


async def recover(
    store: EventStore,
    actor: str,
    *,
    load: Callable[[Any], S],
    empty: Callable[[], S],
    covers: Callable[[S], str],
    fold: Callable[[S, StoredEvent], object],
    log: FilteringBoundLogger,
    since: Callable[[str], str] | None = None,
    archive: Archive | None = None,
) -> Recovered[S]:
    """The newest readable snapshot (else `empty()`) with `fold` applied to every event after it.

    `covers` tells the stream id a state has read up to; `since`, given that id, where the
    replay starts (an actor that needs only recent events starts later). Events the stream
    no longer holds are read from `archive` (a snapshot normally covers them all). A store
    outage is waited out and the whole recovery starts again, from the snapshot.
    """

    async def attempt() -> Recovered[S]:
        started = time.perf_counter()
        state = await newest_snapshot(store, actor, load, log)
        if state is None:
            state = empty()
        covered = covers(state)
        _, replayed = await replay(
            store, covered if since is None else since(covered), lambda stored: fold(state, stored), archive
        )
        return Recovered(state, covered, replayed, time.perf_counter() - started)

    return await retrying("event store unavailable during recovery; retrying", attempt, log)


@dataclass(slots=True)
class Cadence:
    """When a snapshot is due: after `every` events, or `seconds` after the last one with any event since.

    Times are `time.monotonic()` values passed in.
    """

    every: int
    seconds: float
    at: float
    since: int = 0

    def count(self, events: int = 1) -> None:
        """`events` more were applied since the last snapshot."""
        self.since += events

    def due(self, now: float) -> bool:
        """Whether a snapshot should be taken at `now`."""
        return self.since >= self.every or (self.since > 0 and now - self.at >= self.seconds)

    def force(self) -> None:
        """Make the next check due (an operator asked for a snapshot)."""
        self.since = max(self.since, self.every)

    def taken(self, now: float) -> None:
        """A snapshot was taken (or skipped) at `now`: start counting afresh."""
        self.since = 0
        self.at = now


async def take_snapshot(
    store: EventStore, actor: str, covers: str, data: Callable[[], object], log: FilteringBoundLogger
) -> bool:
    """Save `data()` as `actor`'s snapshot covering stream id `covers`; False if it is not serialisable.

    A snapshot only shortens recovery: one that cannot be serialised is logged and skipped,
    and the actor goes on. A store outage is raised to the caller.
    """
    try:
        document = json.dumps(data(), separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        log.exception("snapshot skipped: the state could not be serialised", actor=actor)
        return False
    await store.save_snapshot(actor, covers, document)
    return True
