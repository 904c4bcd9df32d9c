"""Which pools an attempt waiting for a token may take it from: its kind's fallback routes (pure).

A route is a group of pools (`[[routes]]`, in the order of preference). An attempt may use
the routes of its kind's chain that cost no more than its task was charged; it takes its token
from the first of them that serves (a pool neither parked for the day nor out of keys), and
from a later one only when the first cannot start its call by the task's deadline and the later
one can. A route whose windows are merely spent is waited for, not left: that is a short wait,
and leaving it would spend the dearer or slower route's budget for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from actors.keypool.pool import PoolState


@dataclass(frozen=True, slots=True)
class Want:
    """An attempt waiting for a token: the pool groups it may use, in order (None: any pool), and
    its task's deadline (0: none)."""

    task_id: str
    attempt: int
    routes: tuple[tuple[str, ...], ...] | None = None
    until: float = 0.0
    # Its priority lane, and the fraction of each pool's window it must leave to other lanes
    # (their reserved shares, `actors.config.lanes`).
    lane: str = ""
    keep: float = 0.0


def wanted(item: Want | tuple[str, int]) -> Want:
    """A `Want` from what a waiting line yields: a Want, or a bare (task id, attempt)."""
    return item if isinstance(item, Want) else Want(item[0], item[1])


def kept(pool: PoolState, keep: float) -> int:
    """The places of each of `pool`'s windows that a waiter leaving `keep` of them may not take."""
    return int(keep * pool.limiter.capacity) if keep else 0


class Serving(Protocol):
    """What decides whether a pool serves: its working keys and until when it is parked (a
    `PoolState`, or the `PoolStatus` the ingress reads)."""

    @property
    def name(self) -> str: ...

    @property
    def healthy_keys(self) -> tuple[str, ...]: ...

    @property
    def parked_until(self) -> float: ...


S = TypeVar("S", bound=Serving)


def serves(pool: Serving, now: float) -> bool:
    """Whether the pool serves at all at `now`: not parked for the day, with a working key."""
    return bool(pool.healthy_keys) and pool.parked_until <= now


def serving_groups(groups: Iterable[list[S]], now: float) -> list[list[S]]:
    """The pool groups (routes, in order) with a pool that serves at `now`: the first of them
    serves a task that has no deadline."""
    return [group for group in groups if any(serves(p, now) for p in group)]


def pools_for(pools: Mapping[str, PoolState], want: Want, now: float) -> list[PoolState]:
    """The pools `want` may take its token from at `now` (empty: none of its routes serves)."""
    if want.routes is None:
        return list(pools.values())
    groups = [[pools[name] for name in names if name in pools] for names in want.routes]
    serving = serving_groups(groups, now)
    if not serving:
        return []
    if want.until:
        for group in serving:
            if min(p.next_free_at(now) for p in group) < want.until:
                return group
    return serving[0]


def route_groups(chain: Sequence[tuple[Sequence[str], int]], charged: int) -> tuple[tuple[str, ...], ...]:
    """The pool groups of the routes in `chain` ((pools, price) in order) that a task charged
    `charged` credits may use: those that cost no more."""
    return tuple(tuple(pools) for pools, price in chain if price <= charged)
