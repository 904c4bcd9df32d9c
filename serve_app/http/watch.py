"""Live task progress: one stream tailer per replica feeds every Server-Sent-Events watcher of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from actors.shell import Backoff
from events.catalogue import (
    KeyCooledDown,
    KeyDisabled,
    KeyLimitLearned,
    KeyParked,
    KeyTokenGranted,
    TokenRevoked,
)
from events.codec import decode_entries
from events.errors import StoreUnavailableError
from events.lane_positions import Lanes
from events.redis_store import RedisEventStore
from serve_app.http.fanout import REFRESH_SECONDS, Fanout, Render, Update, queue_effect

log = structlog.get_logger("genqueue.watch")

# How often the tokens of open streams are looked up again: a revocation the tailer did not
# see (made before it started, or between a stream's authentication and its start) still
# ends the stream within this time.
TOKEN_CHECK_SECONDS = 15.0
# How often every open stream is sent a comment, so that proxies and clients do not take a
# stream with nothing to say for dead.
KEEPALIVE_SECONDS = 15.0
_REVOCATION = frozenset({TokenRevoked.type})


@dataclass(eq=False)
class Stream:
    """One open watch stream: `update` is its task as it stands, `wake` is set whenever the hub
    hands it a new one, and `revoked` turns true (with `wake` set) once its token stops working."""

    task_id: str
    token_id: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    revoked: bool = False
    update: Update | None = None
    ping: bool = False

    def end(self) -> None:
        """Mark the stream's token revoked and wake it, so that it ends."""
        self.revoked = True
        self.wake.set()

    def send(self, update: Update) -> None:
        """Hand the stream its task's new update and wake it."""
        self.update = update
        self.wake.set()

    def nudge(self) -> None:
        """Have the stream send a keep-alive comment."""
        self.ping = True
        self.wake.set()


class Hub:
    """Tails the event stream once (XREAD BLOCK) for every watcher of this replica: a watched
    task's own event has it read again at once, a move of the queue has the positions of the
    waiting ones read (at most every `refresh_seconds`), each read is one round trip for all of
    them (see `Fanout`), and each stream is handed its task's update ready to send, only when
    what it says changed. A key event has the stages of the queued ones rendered again (a grant
    or a cooldown those of the dispatched ones, a parked pool or a disabled key all of them).
    Ends every stream of a token that was revoked, and counts each token's open streams on this
    replica."""

    def __init__(
        self,
        store: RedisEventStore,
        token_check_seconds: float = TOKEN_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = REFRESH_SECONDS,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        lanes: Lanes | None = None,
    ) -> None:
        self._store = store
        self._watchers: dict[str, set[Stream]] = defaultdict(set)
        self._by_token: dict[str, set[Stream]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._tailing = asyncio.Event()
        self._closed = False
        self._token_check_seconds = token_check_seconds
        self._keepalive_seconds = keepalive_seconds
        self._clock = clock
        self._revoked: list[Callable[[str], None]] = []
        self._fanout = Fanout(store, self._publish, refresh_seconds, clock, lanes)

    def on_revoked(self, callback: Callable[[str], None]) -> None:
        """Call `callback(token_id)` for each revoked token the hub learns of; starts the tailer."""
        self._revoked.append(callback)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._tail())

    def streams_of(self, token_id: str) -> int:
        """How many streams `token_id` holds open on this replica."""
        return len(self._by_token.get(token_id, ()))

    @contextlib.contextmanager
    def watch(self, task_id: str, token_id: str = "", render: Render | None = None) -> Iterator[Stream]:
        """A stream of `task_id` for `token_id`, counted while open; starts the tailer on first use.

        `render` makes a task's view into what its streams are sent (the replica's one: the
        latest given serves every stream); without any, streams only learn of revocations.
        """
        if render is not None:
            self._fanout.render = render
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._tail())
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._fanout.run(self._tailing))
        stream = Stream(task_id, token_id, update=self._fanout.current(task_id))
        if stream.update is None:
            self._fanout.opened(task_id)
        self._watchers[task_id].add(stream)
        self._by_token[token_id].add(stream)
        try:
            yield stream
        finally:
            for index, key in ((self._watchers, task_id), (self._by_token, token_id)):
                index[key].discard(stream)
                if not index[key]:
                    del index[key]
            if task_id not in self._watchers:
                self._fanout.forget(task_id)

    def _publish(self, task_id: str, update: Update) -> bool:
        """Hand `update` to the task's streams that have not been sent what it says."""
        streams = self._watchers.get(task_id)
        if not streams:
            return False
        for stream in streams:
            if stream.update is None or stream.update.key != update.key or update.ended:
                stream.send(update)
            else:
                stream.update = update  # a fresher ETA, nothing to send
        return True

    async def close(self) -> None:
        """Stop the tailer and the refresher."""
        # A flag as well as a cancel: the Redis client may swallow a cancellation that
        # arrives during its blocking read, and the loop then ends at the read's timeout.
        self._closed = True
        for task in (self._task, self._refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _end_streams_of(self, token_id: str) -> None:
        for callback in self._revoked:
            callback(token_id)
        for stream in self._by_token.get(token_id, ()):
            stream.end()

    async def _check_tokens(self) -> None:
        """End the streams of every token that is no longer live."""
        token_ids = [t for t in self._by_token if t]  # "": no token (tokens not required)
        try:
            digests = await asyncio.gather(*(self._store.token_digest(t) for t in token_ids))
        except (StoreUnavailableError, RedisError, OSError) as exc:
            log.warning("watch: could not check the streams' tokens", error=str(exc))
            return
        for token_id, found in zip(token_ids, digests, strict=True):
            if found is None:
                self._end_streams_of(token_id)

    async def _tail(self) -> None:
        after = await self._store.last_id()
        # Reads of watched tasks wait for this: one made before would miss the events between.
        self._tailing.set()
        for task_id in self._watchers:  # a tail started again may have missed their changes
            self._fanout.changed(task_id)
        backoff = Backoff()
        check_at = self._clock() + self._token_check_seconds
        ping_at = self._clock() + self._keepalive_seconds
        while not self._closed:
            if self._clock() >= check_at:
                check_at = self._clock() + self._token_check_seconds
                await self._check_tokens()
            if self._clock() >= ping_at:
                # One timer for every stream: a timeout per stream's wait would be re-armed
                # on each of its messages.
                ping_at = self._clock() + self._keepalive_seconds
                for streams in self._watchers.values():
                    for stream in streams:
                        stream.nudge()
            try:
                entries = await self._store.tail_raw(after, 1000)
                backoff.reset()
            except (StoreUnavailableError, RedisError) as exc:
                log.warning("watch tail: store unavailable", error=str(exc))
                await backoff.wait()
                continue
            if entries:
                after = entries[-1][0]
            # With no stream open on this replica only revocations matter (the auth cache's):
            # the rest of the batch is not decoded. Decided once the batch is in, so a stream
            # opened while the read waited has every event of it.
            wanted = None if self._watchers else _REVOCATION
            moved, added = False, 0
            for stored in decode_entries(entries, wanted):
                event = stored.event
                if isinstance(event, TokenRevoked):
                    self._end_streams_of(event.token_id)
                    continue
                if not self._watchers:
                    continue
                task_id = getattr(event, "task_id", "")
                if task_id in self._watchers:
                    self._fanout.changed(task_id)
                if isinstance(event, KeyParked | KeyDisabled):  # a kind may be blocked now
                    self._fanout.pools_changed(every=True)
                elif isinstance(event, KeyTokenGranted | KeyCooledDown | KeyLimitLearned):
                    self._fanout.pools_changed(every=False)
                moves, adds = queue_effect(event, self._store.keys)
                moved, added = moved or moves, added + adds
            if moved:
                self._fanout.moved(added)
