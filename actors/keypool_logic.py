"""Pure key-pool decisions: which pool and key serves the next call, and what upstream's answers teach.

A pool is one upstream project. Its limits are rolling-window limiters (requests and images
per window, at the smaller of the two rates) and a daily counter that resets at midnight
Pacific. A per-minute 429 cools the pool down for upstream's RetryInfo delay and lowers the
pool's rate (the real limit is lower than configured); after a clean, busy period the rate
is probed back up additively, never above the configured one. A per-day 429 parks the pool
until midnight Pacific; a rejected key is disabled and the pool goes on with its other keys.
Time is always a parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from actors.limiter import SlidingWindowLog
from actors.providers.base import Failure
from events.catalogue import KeyCooledDown, KeyDisabled, KeyEvent, KeyLimitLearned, KeyParked
from events.days import next_pacific_midnight, pacific_day

# How much of the window a 429 at the right rate adds to the margin: 10 ms at 1 s windows,
# where one late packet of a loaded machine is enough for such a 429.
MARGIN_STEP = 0.01


def window_capacity(rpm: int, window: float) -> int:
    """Calls allowed in one window of `window` seconds at `rpm` requests per minute."""
    return max(1, int(rpm * window / 60 + 1e-9))


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
    """One quota pool (one upstream project): its keys, limiters and what upstream told it."""

    name: str
    rpm: int
    window: float
    key_ids: tuple[str, ...]
    rpd: int = 0
    tuning: Tuning = field(default_factory=Tuning)
    rate: int = 0  # the effective calls per minute: the configured rate, or less once learned
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

    @property
    def healthy_keys(self) -> tuple[str, ...]:
        """The keys not disabled, in configured order."""
        return tuple(k for k in self.key_ids if k not in self.disabled)

    def usable(self, now: float) -> bool:
        """Whether the pool may serve calls at all at `now` (a cooldown is a short wait, not this)."""
        return now >= self.parked_until and bool(self.healthy_keys)

    def day_left(self, now: float) -> float:
        """Calls left today (inf without a daily limit)."""
        if not self.rpd:
            return math.inf
        return self.rpd - (self.day_calls if pacific_day(now) == self.day else 0)

    def available(self, now: float) -> int:
        """Tokens the pool can hand out at `now`."""
        if not self.usable(now) or now < self.cooldown_until:
            return 0
        return int(min(self.limiter.available(now), self.day_left(now)))

    def state(self, now: float) -> str:
        """ok, cooling (a per-minute 429), parked (daily quota) or no keys."""
        if not self.healthy_keys:
            return "no keys"
        if now < self.parked_until:
            return "parked"
        return "cooling" if now < self.cooldown_until else "ok"

    def next_free_at(self, now: float) -> float:
        """The earliest time at or after `now` when the pool may grant (inf when unusable)."""
        if not self.healthy_keys:
            return math.inf
        at = max(now, self.parked_until, self.cooldown_until, self.limiter.next_free_at(now))
        if self.day_left(at) <= 0:
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


def choose(pools: list[PoolState], now: float) -> PoolState | None:
    """The pool with the most budget left at `now`, or None when every pool is spent."""
    best: PoolState | None = None
    best_free = 0
    for pool in pools:
        free = pool.available(now)
        if free > best_free:
            best, best_free = pool, free
    return best


def soonest(pools: list[PoolState], now: float, lead: float) -> tuple[PoolState, float] | None:
    """The pool whose next place frees first and when, if that is at most `lead` seconds away."""
    best = min(pools, key=lambda p: p.next_free_at(now), default=None)
    if best is None:
        return None
    at = best.next_free_at(now)
    return (best, at) if at <= now + lead else None


def grant(pool: PoolState, now: float) -> str:
    """Take one token from `pool` at `now` (a moment ahead, for a grant made ahead) and
    return the key id to use."""
    if pool.available(now) < 1 or not pool.limiter.take(now):
        raise ValueError(f"pool {pool.name} has no token at {now}")
    key_id = pool.next_key_id()
    pool.next_key += 1
    pool.granted += 1
    if pool.rpd:
        pool.count_day(now)
    return key_id


def next_free_at(pools: list[PoolState], now: float) -> float:
    """The earliest time any pool can grant again (inf when none ever can)."""
    return min(p.next_free_at(now) for p in pools)


def usable_at(pools: list[PoolState], now: float) -> float:
    """The earliest time at or after `now` when some pool is neither parked nor out of keys."""
    return min((max(now, p.parked_until) for p in pools if p.healthy_keys), default=math.inf)


def throttled(
    pool: PoolState, now: float, retry_after: float | None, quota_value: int | None
) -> tuple[float | None, str]:
    """A per-minute 429: (new cooldown end, or None if the current one already covers it;
    what was learned: "" for nothing, "quota", "timing" or "decrease").

    The cooldown lasts upstream's RetryInfo delay, or one window when it gave none. At most
    once per window (the 429s of one overshoot arrive together) the pool learns:
    - upstream's quotaValue is below the rate: the rate becomes quotaValue ("quota");
    - quotaValue equals the rate: the limit is right and the call reached upstream too
      early after the one whose place it took: the margin grows by MARGIN_STEP of the
      window ("timing"), up to its cap. Additive, since every window pays the margin: the
      429s of one stall (a burst of submits starving the workers of CPU) must not double it;
    - otherwise (no quotaValue, or the margin is at its cap): rate x decrease ("decrease").
    """
    pool.last_throttled = now
    until = now + (retry_after if retry_after is not None and retry_after >= 0 else pool.window)
    cooled = None
    if until > pool.cooldown_until:
        pool.cooldown_until = until
        cooled = until
    if now - pool.last_change < pool.window:
        return cooled, ""
    cap = pool.tuning.max_margin * pool.window
    if quota_value and quota_value < pool.rate:
        pool.set_rate(quota_value, now)
        return cooled, "quota"
    if quota_value and pool.margin < cap - 1e-9:
        pool.set_margin(pool.margin + MARGIN_STEP * pool.window, now)
        return cooled, "timing"
    target = max(1, math.floor(pool.rate * pool.tuning.decrease))
    if target < pool.rate:
        pool.set_rate(target, now)
        return cooled, "decrease"
    return cooled, ""


def probe(pool: PoolState, now: float) -> str:
    """After a clean, busy period, take one step back up; returns "margin", "rate" or "".

    Clean: no 429 for `probe_after` windows since the last 429 or change. Busy: the limiter
    is full right now, so the step would be used (an idle pool learns nothing). A widened
    margin is halved first; then the rate grows by `probe_step` of the configured rate,
    never past it.
    """
    quiet_since = max(pool.last_throttled, pool.last_change)
    if now - quiet_since < pool.tuning.probe_after * pool.window or pool.limiter.available(now) > 0:
        return ""
    if pool.margin > pool.tuning.margin:
        pool.set_margin(pool.margin / 2 if pool.margin / 2 > pool.tuning.margin + 1e-9 else 0.0, now)
        return "margin"
    if pool.rate >= pool.rpm:
        return ""
    step = max(1, round(pool.rpm * pool.tuning.probe_step))
    pool.set_rate(pool.rate + step, now)
    return "rate"


@dataclass(frozen=True, slots=True)
class CallFailure:
    """What a worker reports of a call that upstream refused: never the key, only its id."""

    key_id: str
    failure: Failure
    code: int = 0
    retry_after: float | None = None
    quota_id: str = ""
    quota_value: int | None = None
    reason: str = ""


_LEARNED = {
    "quota": "429 with room in the window: upstream's limit is lower",
    "timing": "429 at the right rate: calls reach upstream unevenly; wider margin",
    "decrease": "429 with room in the window: lowering the rate",
}


def limit_learned(pool: PoolState, previous: int, reason: str, now: float) -> KeyLimitLearned:
    """The event for a change of the pool's rate or margin."""
    return KeyLimitLearned(
        pool=pool.name,
        rpm=pool.rate,
        previous=previous,
        configured=pool.rpm,
        margin=round(pool.margin, 4),
        reason=reason,
        at=now,
    )


def learn(pool: PoolState, report: CallFailure, hint: str, now: float) -> list[KeyEvent]:
    """Apply a refused call to the pool; the key events that record what changed (maybe none).

    THROTTLED cools the pool and may teach it a rate or margin; QUOTA_DAY parks it until
    midnight Pacific; KEY_REJECTED disables the key (`hint` tells a replaced key apart).
    """
    events: list[KeyEvent] = []
    if report.failure is Failure.THROTTLED:
        previous = pool.rate
        cooled, learned = throttled(pool, now, report.retry_after, report.quota_value)
        if cooled is not None:
            events.append(
                KeyCooledDown(
                    pool=pool.name,
                    key_id=report.key_id,
                    until=cooled,
                    retry_after=cooled - now,
                    quota_id=report.quota_id,
                    at=now,
                )
            )
        if learned:
            quota = f"{report.quota_id or 'unnamed quota'}, quotaValue {report.quota_value}"
            events.append(limit_learned(pool, previous, f"{_LEARNED[learned]} ({quota})", now))
    elif report.failure is Failure.QUOTA_DAY:
        until = next_pacific_midnight(now)
        if until > pool.parked_until:
            pool.parked_until = until
            events.append(
                KeyParked(
                    pool=pool.name,
                    key_id=report.key_id,
                    until=until,
                    quota_id=report.quota_id,
                    reason=report.reason,
                    at=now,
                )
            )
    elif report.failure is Failure.KEY_REJECTED and report.key_id in set(pool.key_ids) - pool.disabled:
        pool.disabled.add(report.key_id)
        events.append(
            KeyDisabled(
                pool=pool.name,
                key_id=report.key_id,
                hint=hint,
                code=report.code,
                reason=report.reason,
                at=now,
            )
        )
    return events


def probe_all(pools: list[PoolState], now: float) -> list[KeyLimitLearned]:
    """Probe every pool (see `probe`); the events of the steps taken."""
    events = []
    for pool in pools:
        previous = pool.rate
        if step := probe(pool, now):
            reason = f"no 429 for {pool.tuning.probe_after:g} busy windows: probing the {step} back"
            events.append(limit_learned(pool, previous, reason, now))
    return events
