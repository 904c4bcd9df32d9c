"""One quota pool's state: its limiters, cooldown, parking, keys and day, and how it learns.

A pool's calls are counted per Pacific day; its day limit is `rpd` or the calls its daily
spend cap pays for (`max_spend_per_day` / `price_per_image`, rounded down), the lower of the
two. Past it the pool grants nothing until Pacific midnight.

Changed only by the key pool's fold (`actors.keypool.state.apply_pool`); a decision tries
grants on linked copies (`copy_pools`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.config import STANDARD
from actors.config.pools import spend_cap_calls, usd
from actors.forecast import window_capacity
from actors.keypool.limiter import SlidingWindowLog
from actors.keypool.status import PoolStatus, pool_status
from events.days import next_pacific_midnight, pacific_day


@dataclass(frozen=True, slots=True)
class Tuning:
    """How a pool learns from 429s.

    `decrease`: the factor a per-minute 429 multiplies the rate by (unless upstream's
    quotaValue names a lower rate, which is then taken); `probe_after`: windows of clean,
    busy running before the rate is raised; `probe_step`: how much of the configured rate
    each probe adds. `margin`: seconds added to each window, for the spread between a
    grant and its call reaching upstream; it widens by MARGIN_STEP of the window, up to
    `max_margin` (a share of the window), when upstream's quotaValue shows the rate is right
    and the 429 came from timing.
    """

    decrease: float = 0.7
    probe_after: float = 10.0
    probe_step: float = 0.05
    margin: float = 0.0
    max_margin: float = 0.1


@dataclass(slots=True)
class PoolState:
    """One quota pool (one upstream project): its keys, limiters and what upstream told it.

    `name` to `tuning` and `hints` (key id -> the key's hint) come from the configuration;
    `price_per_image` and `max_spend_per_day` (USD, 0: no cap) too. The rest changes only
    by `apply`.
    """

    name: str
    rpm: int
    window: float
    key_ids: tuple[str, ...]
    rpd: int = 0
    tuning: Tuning = field(default_factory=Tuning)
    rate: int = 0  # the effective calls per minute: the configured rate, or less once learned
    hints: dict[str, str] = field(default_factory=dict)
    service_tier: str = STANDARD
    price_per_image: float = 0.0
    max_spend_per_day: float = 0.0
    # The pools whose windows each of its grants also takes a place in, and their limiters
    # (set by `link`: a grant needs a place in every one of them).
    counts_against: tuple[str, ...] = ()
    over: tuple[SlidingWindowLog, ...] = field(default=(), init=False, compare=False, repr=False)
    margin: float = field(init=False)
    limiter: SlidingWindowLog = field(init=False)
    cooldown_until: float = 0.0
    parked_until: float = 0.0
    disabled: set[str] = field(default_factory=set)
    day: str = ""
    day_calls: int = 0
    last_throttled: float = 0.0
    last_change: float = -math.inf
    next_key: int = 0
    granted: int = 0

    def __post_init__(self) -> None:
        self.rate = self.rpm if self.rate <= 0 else min(self.rate, self.rpm)
        self.margin = self.tuning.margin
        self.limiter = SlidingWindowLog(
            capacity=window_capacity(self.rate, self.window), window=self.window + self.margin
        )

    def describe(self, now: float, waiting: int) -> dict[str, Any]:
        """The pool as `KeyPool.status` shows it: limits, learned rate, tokens left, cooldown,
        parking, disabled keys and today's calls."""
        return {
            "name": self.name,
            "rpm": self.rpm,
            "rate": self.rate,
            "margin": self.margin,
            "rpd": self.rpd,
            "price_per_image": self.price_per_image,
            "max_spend_per_day": self.max_spend_per_day,
            "day_limit": self.day_limit,
            "spent_today": round(self.calls_on(now) * self.price_per_image, 6),
            "service_tier": self.service_tier,
            "counts_against": list(self.counts_against),
            "window_seconds": self.window,
            "capacity": self.limiter.capacity,
            "available": self.available(now),
            "next_free_in": max(0.0, min(self.next_free_at(now), now + 10**9) - now),
            "cooldown_in": max(0.0, self.cooldown_until - now),
            "parked_until": self.parked_until if self.parked_until > now else 0.0,
            "disabled": sorted(self.disabled),
            "day_calls": self.calls_on(now),
            "granted": self.granted,
            "keys": len(self.key_ids),
            "waiting": waiting,
        }

    def copy(self) -> PoolState:
        """An independent copy (a decision tries its grants on one), linked to no other pool's
        window: `copy_pools` copies pools together and links the copies."""
        twin = copy.copy(self)
        twin.limiter = self.limiter.copy()
        twin.disabled = set(self.disabled)
        twin.over = ()
        return twin

    @property
    def healthy_keys(self) -> tuple[str, ...]:
        """The keys not disabled, in configured order."""
        return tuple(k for k in self.key_ids if k not in self.disabled)

    def status(self, now: float) -> PoolStatus:
        """The pool as the page, the queue and the alerts see it (its `disabled` set already
        holds only the keys rejected under their configured hint)."""
        keys = dict.fromkeys(self.key_ids, "")
        return pool_status(
            self.name, keys, dict.fromkeys(self.disabled, ""), self.parked_until, self.cooldown_until, now
        )

    def usable(self, now: float) -> bool:
        """Whether the pool may serve calls at all at `now` (a cooldown is a short wait, not this)."""
        return self.status(now).usable_from <= now

    @property
    def spend_cap_calls(self) -> int:
        """The calls a day its spend cap pays for (0: no spend cap)."""
        return spend_cap_calls(self.max_spend_per_day, self.price_per_image)

    @property
    def day_limit(self) -> int:
        """The calls it may make a Pacific day: `rpd` or the spend cap's, the lower (0: no limit)."""
        return min((n for n in (self.rpd, self.spend_cap_calls) if n), default=0)

    def calls_on(self, at: float) -> int:
        """Its calls counted on the Pacific day of `at`."""
        return self.day_calls if pacific_day(at) == self.day else 0

    def day_left(self, now: float) -> float:
        """Calls left today (inf without a daily limit)."""
        if not self.day_limit:
            return math.inf
        return self.day_limit - self.calls_on(now)

    def capped(self, at: float) -> bool:
        """Whether its calls of the Pacific day of `at` reached what its spend cap pays for."""
        return bool(self.spend_cap_calls) and self.calls_on(at) >= self.spend_cap_calls

    def spend_text(self, at: float) -> str:
        """What it spent on the Pacific day of `at` against its cap, as a park's reason says it."""
        spent = self.calls_on(at) * self.price_per_image
        return f"spend cap: ${usd(spent)} of ${usd(self.max_spend_per_day)} today"

    def available(self, now: float) -> int:
        """Tokens the pool can hand out at `now`: each needs a place in its own window and in
        every window it counts against."""
        if not self.usable(now) or now < self.cooldown_until:
            return 0
        free = min(log.available(now) for log in (self.limiter, *self.over))
        return int(min(free, self.day_left(now)))

    def next_free_at(self, now: float, places: int = 1) -> float:
        """The earliest time at or after `now` when the pool may grant `places` tokens (inf when
        it never can)."""
        if not self.healthy_keys or (self.day_limit and self.day_limit < places):
            return math.inf
        windows = (self.limiter, *self.over)
        at = max(now, self.parked_until, self.cooldown_until, *(w.next_free_at(now, places) for w in windows))
        if self.day_left(at) < places:
            at = max(at, next_pacific_midnight(at))
        return at

    def next_key_id(self) -> str:
        """The healthy key this pool hands out next (round robin)."""
        keys = self.healthy_keys
        return keys[self.next_key % len(keys)]

    def set_rate(self, rate: int, now: float) -> None:
        """Use `rate` calls per minute from now on (capped at the configured rate)."""
        self.rate = max(1, min(rate, self.rpm))
        self.limiter.resize(window_capacity(self.rate, self.window))
        self.last_change = now

    def set_margin(self, margin: float, now: float) -> None:
        """Keep `margin` seconds between a grant and the one a window later that reuses its place."""
        self.margin = max(self.tuning.margin, min(margin, self.tuning.max_margin * self.window))
        self.limiter.window = self.window + self.margin
        self.last_change = now

    def count_day(self, at: float) -> None:
        """Count one call against the day it falls in (Pacific)."""
        day = pacific_day(at)
        if day != self.day:
            self.day, self.day_calls = day, 0
        self.day_calls += 1


def link(pools: Mapping[str, PoolState]) -> Mapping[str, PoolState]:
    """Point each pool at the limiters of the pools it counts against (those not among
    `pools` are left out); `pools` itself, linked."""
    for pool in pools.values():
        pool.over = tuple(pools[name].limiter for name in pool.counts_against if name in pools)
    return pools


def copy_pools(pools: Mapping[str, PoolState]) -> dict[str, PoolState]:
    """Independent copies of `pools`, linked among themselves (a decision tries grants on them)."""
    copies = {name: pool.copy() for name, pool in pools.items()}
    link(copies)
    return copies
