"""The key pool's hand-off: the QueueActor's attempts of a round wait in the line, and each goes
on to its worker with its answer (a token or a refusal) as soon as it has one.

`KeyPool.hand_many` takes a round's attempts for one worker; `hand_on` waits for their answers
some at a time, as a grant turn gives them, and sends each batch to the worker in one
`run_granted` call. The call returns only once every attempt was handed on, so after a restart
of the key pool Ray sends it again: the attempts take their places again, and one granted
before (`resent`) goes on with its grant, its worker checking that its task still runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from actors.config import Config
from actors.messages import Ask, AttemptSpec, Token

# At most this many attempts wait in one `hand_on` loop: while a pool binds, each turn answers a
# few and the loop asks again for the rest, so a loop's size is paid once per turn.
MAX_ASKS = 64


def ask_of(spec: AttemptSpec) -> Ask:
    """The token request of an attempt: its place, deadline, kind, charge and lane."""
    return Ask(spec.task_id, spec.attempt, spec.order, spec.deadline, spec.kind, spec.price, spec.lane)


async def hand_on(
    specs: list[AttemptSpec],
    answers: Callable[[list[Ask]], Awaitable[list[tuple[str, int, Token]]]],
    send: Callable[[list[tuple[AttemptSpec, Token]]], object],
) -> int:
    """Wait for the answers of `specs` (`answers`, as `Asks.answers` gives them: some at a time,
    each once) and `send` each batch of answers on with its attempts, MAX_ASKS attempts a loop
    at most; returns how many were sent on once every one was."""

    async def loop(chunk: list[AttemptSpec]) -> None:
        waiting = {(spec.task_id, spec.attempt): spec for spec in chunk}
        while waiting:
            answered = await answers([ask_of(spec) for spec in waiting.values()])
            send([(waiting.pop((task_id, attempt)), token) for task_id, attempt, token in answered])

    await asyncio.gather(*(loop(specs[i : i + MAX_ASKS]) for i in range(0, len(specs), MAX_ASKS)))
    return len(specs)


def marked_resent(specs: list[AttemptSpec], known: Callable[[str, int], Token | None]) -> list[AttemptSpec]:
    """`specs`, those granted before (`known`) marked `resent`: an attempt comes again only
    after a restart, and its task may have ended meanwhile."""
    return [replace(s, resent=True) if known(s.task_id, s.attempt) else s for s in specs]


class WorkerRoutes:
    """The key pool's handles to the workers, found by name as first used."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._handles: dict[int, Any] = {}

    def get(self, index: int) -> Any:
        """The handle of worker `index`."""
        handle = self._handles.get(index)
        if handle is None:
            from actors.factory import get, worker_name  # the factory builds the key pool

            handle = self._handles[index] = get(self._config, worker_name(index))
        return handle

    async def open(self, workers: int) -> int:
        """Make the first call to workers 0..`workers`-1, with the method attempts go on with:
        the first call on a route, and of a method, costs tens of milliseconds, which a burst's
        first hand-off would otherwise wait for. How many answered."""
        handles = [self.get(i) for i in range(workers)]
        answered = await asyncio.gather(*(h.run_granted.remote([]) for h in handles), return_exceptions=True)
        return sum(not isinstance(a, BaseException) for a in answered)
