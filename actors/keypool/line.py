"""The KeyPoolActor's waiting line: attempts waiting for a token, shared among lanes by weight.

Each priority lane (`actors.config.lanes`) has its own heap, in task order, and a virtual
time that each token handed to it moves on by 1 / its weight (start-time fair queuing). At
each step the line serves the lane, among those with an attempt waiting, whose virtual time is
least: while several lanes wait, each gets its weight's share of the tokens, whenever places
free up. A lane with nothing waiting lends its share: when its tasks come back its virtual
time starts at the least of the waiting lanes' (it banks nothing while idle), so it gets its
share from then on. With no lanes, every attempt waits in the one heap, in task order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from actors.keypool.routes import Want
from actors.messages import Token
from events.catalogue import KeyTokenGranted


@dataclass(order=True, slots=True)
class Waiter:
    """One attempt waiting for a token: its task's place, its arrival, and what it may use."""

    order: float
    seq: int
    task_id: str = field(compare=False)
    attempt: int = field(compare=False)
    future: asyncio.Future[Token] = field(compare=False)
    # The pool groups it may use, in order (None: any pool), and its deadline (0: none).
    routes: tuple[tuple[str, ...], ...] | None = field(default=None, compare=False)
    until: float = field(default=0.0, compare=False)
    lane: str = field(default="", compare=False)


class Line:
    """The waiters, one heap in task order per lane, each answered once.

    `weights` gives each lane's weight (empty: no lanes, one heap); a lane it does not name
    (an older task's) weighs 1.
    """

    def __init__(
        self, weights: Mapping[str, float] | None = None, reserved: Mapping[str, float] | None = None
    ) -> None:
        self._weights = dict(weights or {})
        # Per lane: the fraction of each window its attempts leave to the other lanes' reserves.
        kept = reserved or {}
        self._keep = {lane: sum(r for o, r in kept.items() if o != lane) for lane in self._weights}
        self._heaps: dict[str, list[Waiter]] = {}
        self._vtime: dict[str, float] = {}  # per lane: tokens handed to it, each 1 / its weight
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())

    def join(
        self,
        order: float,
        task_id: str,
        attempt: int,
        routes: tuple[tuple[str, ...], ...] | None = None,
        until: float = 0.0,
        lane: str = "",
    ) -> asyncio.Future[Token]:
        """Wait in `lane`'s line; the future is answered with a token or a refusal."""
        future: asyncio.Future[Token] = asyncio.get_running_loop().create_future()
        lane = lane if self._weights else ""
        if self._weights and not self._live(self._heaps.get(lane, [])):
            # Back from idle: level with the lanes waiting now (or the furthest, if none).
            waiting = [self.vtime(name) for name, heap in self._heaps.items() if self._live(heap)]
            floor = min(waiting) if waiting else max(self._vtime.values(), default=0.0)
            self._vtime[lane] = max(self.vtime(lane), floor)
        waiter = Waiter(order, next(self._arrivals), task_id, attempt, future, routes, until, lane)
        self._push(waiter)
        return future

    def vtime(self, lane: str) -> float:
        """The lane's virtual time: the tokens handed to it, each counted 1 / its weight."""
        return self._vtime.get(lane, 0.0)

    def take(
        self,
        known: Callable[[str, int], Token | None],
        served: list[Waiter],
        again: list[Waiter],
        shut: set[str] | None = None,
    ) -> Iterator[Want]:
        """The waiting attempts, lane by lane by virtual time (see the module), each taken off its
        heap only as it is asked for; each counts against its lane for the rest of the turn. A
        lane the consumer adds to `shut` (no place it may take is left) yields no more.

        An attempt already granted (a repeated acquire) gets its grant and takes no token; one
        served in this very turn waits for the next, which finds its grant.
        """
        tags = dict(self._vtime)
        taken = set()
        shut = shut if shut is not None else set()
        while lanes := [lane for lane, heap in self._heaps.items() if lane not in shut and self._live(heap)]:
            lane = lanes[0] if len(lanes) == 1 else min(lanes, key=lambda n: self._rank(tags, n))
            waiter = heapq.heappop(self._heaps[lane])
            key = (waiter.task_id, waiter.attempt)
            if (token := known(*key)) is not None:
                waiter.future.set_result(token)
            elif key in taken:
                again.append(waiter)
            else:
                taken.add(key)
                tags[lane] = tags.get(lane, 0.0) + 1 / self._weights.get(lane, 1.0)
                served.append(waiter)
                keep = self._keep.get(lane, 0.0)
                yield Want(waiter.task_id, waiter.attempt, waiter.routes, waiter.until, lane, keep)

    def hand_out(self, served: list[Waiter], grants: list[KeyTokenGranted]) -> None:
        """Answer the waiters given tokens (their grants are written), each moving its lane's
        virtual time on; the others wait again in their lane."""
        granted = {(g.task_id, g.attempt): g for g in grants}
        for waiter in served:
            g = granted.get((waiter.task_id, waiter.attempt))
            if g is None:
                self._push(waiter)
                continue
            if self._weights:  # its place is spent even if its caller left
                self._vtime[waiter.lane] = self.vtime(waiter.lane) + 1 / self._weights.get(waiter.lane, 1.0)
            if not waiter.future.done():
                waiter.future.set_result(Token(g.pool, g.key_id, not_before=g.at))

    def _rank(self, tags: Mapping[str, float], lane: str) -> tuple[float, float, str]:
        """Least virtual time first; ties to the heavier lane, then by name."""
        return (tags.get(lane, 0.0), -self._weights.get(lane, 1.0), lane)

    def withdraw(self, attempts: set[tuple[str, int]], refusal: Token) -> int:
        """Answer the waiting `attempts` (task id, attempt) with `refusal`; how many were waiting
        (one already answered, e.g. granted, is left as it is)."""
        answered = 0
        for heap in self._heaps.values():
            for waiter in heap:
                if (waiter.task_id, waiter.attempt) in attempts and not waiter.future.done():
                    waiter.future.set_result(refusal)
                    answered += 1
        return answered

    def refuse_all(self, refusal: Token) -> None:
        """Answer every waiter, in every lane, with `refusal`."""
        for heap in self._heaps.values():
            for waiter in heap:
                if not waiter.future.done():
                    waiter.future.set_result(refusal)
        self._heaps.clear()

    def _push(self, waiter: Waiter) -> None:
        heapq.heappush(self._heaps.setdefault(waiter.lane, []), waiter)

    @staticmethod
    def _live(heap: list[Waiter]) -> bool:
        """Whether `heap` holds a waiter still unanswered (answered ones on top are dropped)."""
        while heap and heap[0].future.done():
            heapq.heappop(heap)
        return bool(heap)
