"""Pure key-pool decisions: which quota pool and key serves the next call, and when one frees up."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.limiter import SlidingWindowLog


@dataclass(slots=True)
class PoolState:
    """One quota pool (one upstream project): its keys and its rolling-window limiter."""

    name: str
    rpm: int
    window: float
    key_ids: tuple[str, ...]
    limiter: SlidingWindowLog = field(init=False)
    next_key: int = 0
    granted: int = 0

    def __post_init__(self) -> None:
        self.limiter = SlidingWindowLog(capacity=window_capacity(self.rpm, self.window), window=self.window)

    def next_key_id(self) -> str:
        """The key this pool hands out next (round robin)."""
        return self.key_ids[self.next_key % len(self.key_ids)]


def window_capacity(rpm: int, window: float) -> int:
    """Calls allowed in one window of `window` seconds at `rpm` requests per minute."""
    return max(1, int(rpm * window / 60 + 1e-9))


def choose(pools: list[PoolState], now: float) -> PoolState | None:
    """The pool with the most budget left at `now`, or None when every pool is spent."""
    best: PoolState | None = None
    best_free = 0
    for pool in pools:
        free = pool.limiter.available(now)
        if free > best_free:
            best, best_free = pool, free
    return best


def grant(pool: PoolState, now: float) -> str:
    """Take one token from `pool` at `now` and return the key id to use."""
    if not pool.limiter.take(now):
        raise ValueError(f"pool {pool.name} has no token at {now}")
    key_id = pool.next_key_id()
    pool.next_key += 1
    pool.granted += 1
    return key_id


def next_free_at(pools: list[PoolState], now: float) -> float:
    """The earliest time any pool can grant again."""
    return min(p.limiter.next_free_at(now) for p in pools)
