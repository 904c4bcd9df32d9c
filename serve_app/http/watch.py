"""Live task progress: one stream tailer per replica wakes the Server-Sent-Events watchers it concerns."""

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
    TaskCancelled,
    TaskDispatched,
    TaskFailed,
    TaskRetryScheduled,
    TaskSubmitted,
    TokenRevoked,
)
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore

log = structlog.get_logger("genqueue.watch")

# Events that move other waiting tasks' positions.
_MOVES_QUEUE = (TaskDispatched, TaskCancelled, TaskFailed, TaskRetryScheduled, TaskSubmitted)
# How often the tokens of open streams are looked up again: a revocation the tailer did not
# see (made before it started, or between a stream's authentication and its start) still
# ends the stream within this time.
TOKEN_CHECK_SECONDS = 15.0


@dataclass(eq=False)
class Stream:
    """One open watch stream: `wake` is set whenever its task may have changed, and `revoked`
    turns true (with `wake` set) once its token stops working."""

    task_id: str
    token_id: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    revoked: bool = False

    def end(self) -> None:
        """Mark the stream's token revoked and wake it, so that it ends."""
        self.revoked = True
        self.wake.set()


class Hub:
    """Tails the event stream once (XREAD BLOCK) and wakes every stream of a task that changed,
    every stream when the queue moved (positions change), and every stream of a token that was
    revoked. Counts each token's open streams on this replica."""

    def __init__(
        self,
        store: RedisEventStore,
        token_check_seconds: float = TOKEN_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._watchers: dict[str, set[Stream]] = defaultdict(set)
        self._by_token: dict[str, set[Stream]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._token_check_seconds = token_check_seconds
        self._clock = clock

    def streams_of(self, token_id: str) -> int:
        """How many streams `token_id` holds open on this replica."""
        return len(self._by_token.get(token_id, ()))

    @contextlib.contextmanager
    def watch(self, task_id: str, token_id: str = "") -> Iterator[Stream]:
        """A stream of `task_id` for `token_id`, counted while open; starts the tailer on first use."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._tail())
        stream = Stream(task_id, token_id)
        self._watchers[task_id].add(stream)
        self._by_token[token_id].add(stream)
        try:
            yield stream
        finally:
            for index, key in ((self._watchers, task_id), (self._by_token, token_id)):
                index[key].discard(stream)
                if not index[key]:
                    del index[key]

    async def close(self) -> None:
        """Stop the tailer."""
        # A flag as well as a cancel: the Redis client may swallow a cancellation that
        # arrives during its blocking read, and the loop then ends at the read's timeout.
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _end_streams_of(self, token_id: str) -> None:
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
        backoff = Backoff()
        check_at = self._clock() + self._token_check_seconds
        while not self._closed:
            if self._clock() >= check_at:
                check_at = self._clock() + self._token_check_seconds
                await self._check_tokens()
            try:
                batch = await self._store.tail(after, 1000)
                backoff.reset()
            except StoreUnavailableError as exc:
                log.warning("watch tail: store unavailable", error=str(exc))
                await backoff.wait()
                continue
            moved = False
            for stored in batch:
                after = stored.id
                event = stored.event
                if isinstance(event, TokenRevoked):
                    self._end_streams_of(event.token_id)
                    continue
                task_id = getattr(event, "task_id", "")
                for stream in self._watchers.get(task_id, ()):
                    stream.wake.set()
                moved = moved or isinstance(event, _MOVES_QUEUE)
            if moved:
                for streams in self._watchers.values():
                    for stream in streams:
                        stream.wake.set()
