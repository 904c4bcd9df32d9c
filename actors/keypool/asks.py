"""The key pool's open asks: attempts waiting for a token, held until their answer has been
handed on.

The QueueActor hands the key pool each worker's attempts of a round in one `hand_many` call
(`actors.keypool.handoff`): the attempts join the line together, and each time some are
answered (a token, a refusal, or a deadline passed) those answers go on to their worker in one
call, while the rest wait on. An attempt asked for again (the call sent again after a
restart) keeps its place in the line: it waits on the answer it was already waiting for, and an
answer given while no call was waiting for it is kept for the next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from actors.messages import Ask, Token

Key = tuple[str, int]
# The reason of a refusal because the attempt's deadline passed before a token came.
DEADLINE = "deadline"
# An answer nobody came back for (its worker gone) is dropped after this long; a worker asks
# again within milliseconds of its call returning.
KEEP_SECONDS = 300.0


class Asks:
    """(task id, attempt) -> the future its answer comes in, until a call hands it out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._open: dict[Key, asyncio.Future[Token]] = {}
        self._answered: dict[Key, float] = {}  # answered, not yet handed out: since when
        self._clock = clock

    def __len__(self) -> int:
        return len(self._open)

    def get(self, key: Key) -> asyncio.Future[Token] | None:
        """The future of an attempt already asked for and not yet handed out."""
        return self._open.get(key)

    def add(self, key: Key, future: asyncio.Future[Token]) -> None:
        """Hold `future` as `key`'s answer until a call hands it out."""
        self._open[key] = future

        def answered(done: asyncio.Future[Token]) -> None:
            if self._open.get(key) is done:  # not handed out meanwhile
                self._answered[key] = self._clock()

        future.add_done_callback(answered)

    async def answers(self, asks: list[Ask]) -> list[tuple[str, int, Token]]:
        """Wait until one of `asks` is answered or past its deadline; then every answer ready,
        as (task id, attempt, token), each handed out (forgotten here). An ask past its deadline
        unanswered is refused (reason DEADLINE) and leaves the line."""
        waiting = {(a.task_id, a.attempt): a for a in asks}
        futures = {key: self._open[key] for key in waiting}
        while True:
            now = time.time()
            out: list[tuple[str, int, Token]] = []
            for key, ask in waiting.items():
                future = futures[key]
                if future.done() and not future.cancelled():
                    out.append((*key, future.result()))
                elif future.cancelled() or (ask.until and ask.until <= now):
                    future.cancel()  # the grant loop skips it
                    out.append((*key, Token(until=ask.until, reason=DEADLINE)))
            if out:
                for task_id, attempt, _ in out:
                    self._forget((task_id, attempt))
                return out
            untils = [a.until for a in asks if a.until]
            timeout = max(0.0, min(untils) - now) if untils else None
            await asyncio.wait(futures.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    def prune(self) -> int:
        """Drop answers nobody came back for in KEEP_SECONDS; how many."""
        stale = self._clock() - KEEP_SECONDS
        gone = [key for key, at in self._answered.items() if at < stale]
        for key in gone:
            self._forget(key)
        return len(gone)

    def _forget(self, key: Key) -> None:
        self._open.pop(key, None)
        self._answered.pop(key, None)
