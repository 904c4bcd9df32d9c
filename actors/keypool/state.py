"""The key pool's state as a pure fold over its events: limiters, cooldowns, parking, keys, grants.

A grant counts in its pool's window from when its call went out on the wire, and that time
is in the log: `key.grants_redated` re-dates grants to their calls' wire times, so a replay
(from a snapshot or from the start) puts each call of the last window where upstream
counted it. A worker's report of a send waits in the actor until the next grants, which
are appended behind it in the same transaction (or alone, after 0.1 s without grants): no
recorded grant ever relied on a send that the log does not hold. A crash can lose only
reports not yet written, and sends that had not happened yet (calls granted, maybe granted
ahead, and not yet sent); either way the log holds the grant without a reported send. At
start-up the actor dates every such grant still in its window at the start's time
(`key.grants_redated`, `recovered`): each call that went out before the crash went out
before then. A call that goes out later is reported to the new actor, whose fold knows the
grant and re-dates it again (only ever later); until that report is written the grant
stays unreported, so another start dates it again.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from actors.forecast import window_capacity
from actors.keypool.limiter import SlidingWindowLog
from actors.keypool.status import PoolStatus, pool_status
from events.catalogue import (
    KeyCooledDown,
    KeyDisabled,
    KeyGrantsRedated,
    KeyLimitLearned,
    KeyParked,
    KeyTokenGranted,
    StoredEvent,
)
from events.days import next_pacific_midnight, pacific_day

# Grants remembered (a repeated acquire gets the same token; a late send report finds its
# grant); past it the older half is forgotten, on replay as live.
MAX_GRANTS = 10_000

PoolEvent = KeyTokenGranted | KeyCooledDown | KeyParked | KeyDisabled | KeyLimitLearned
KeyPoolEvent = PoolEvent | KeyGrantsRedated


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
    the rest changes only by `apply`.
    """

    name: str
    rpm: int
    window: float
    key_ids: tuple[str, ...]
    rpd: int = 0
    tuning: Tuning = field(default_factory=Tuning)
    rate: int = 0  # the effective calls per minute: the configured rate, or less once learned
    hints: dict[str, str] = field(default_factory=dict)
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
            "window_seconds": self.window,
            "capacity": self.limiter.capacity,
            "available": self.available(now),
            "next_free_in": max(0.0, min(self.next_free_at(now), now + 10**9) - now),
            "cooldown_in": max(0.0, self.cooldown_until - now),
            "parked_until": self.parked_until if self.parked_until > now else 0.0,
            "disabled": sorted(self.disabled),
            "day_calls": self.day_calls if self.day == pacific_day(now) else 0,
            "granted": self.granted,
            "keys": len(self.key_ids),
            "waiting": waiting,
        }

    def copy(self) -> PoolState:
        """An independent copy (a decision tries its grants on one)."""
        twin = copy.copy(self)
        twin.limiter = self.limiter.copy()
        twin.disabled = set(self.disabled)
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


@dataclass(frozen=True, slots=True)
class Grant:
    """A token handed out: its pool and key, the time it was granted for (the call goes out
    no earlier), the time it counts from in its window, and whether a worker's report of its
    send is in the log."""

    pool: str
    key_id: str
    at: float
    counted: float
    sent: bool = False


@dataclass(slots=True)
class KeyPoolState:
    """Everything the KeyPoolActor knows; changed only by `apply`."""

    pools: dict[str, PoolState]
    grants: dict[tuple[str, int], Grant] = field(default_factory=dict)
    last_id: str = "0-0"


def call_name(task_id: str, attempt: int) -> str:
    """How `key.grants_redated` names an attempt's call."""
    return f"{task_id}:{attempt}"


def call_key(name: str) -> tuple[str, int]:
    """The (task id, attempt) of a call name."""
    task_id, _, attempt = name.rpartition(":")
    return task_id, int(attempt)


def apply_pool(pool: PoolState, event: PoolEvent) -> None:
    """Fold one event of this pool into it; the same for a decision trying grants on a copy."""
    match event:
        case KeyTokenGranted():
            pool.limiter.record(event.at)
            pool.next_key += 1
            pool.granted += 1
            if pool.rpd:
                pool.count_day(event.at)
        case KeyCooledDown():
            pool.cooldown_until = max(pool.cooldown_until, event.until)
            pool.last_throttled = max(pool.last_throttled, event.at)
        case KeyParked():
            pool.parked_until = max(pool.parked_until, event.until)
        case KeyDisabled():
            # A key replaced since (another hint) is not held disabled.
            if event.key_id in pool.key_ids and pool.hints.get(event.key_id, event.hint) == event.hint:
                pool.disabled.add(event.key_id)
        case KeyLimitLearned():
            pool.set_rate(event.rpm, event.at)
            pool.set_margin(event.margin, event.at)
        case _:
            assert_never(event)


def redate(pool: PoolState, grant: Grant, sent: float, reported: bool = True) -> Grant:
    """Count `grant` from `sent` in the pool's window if that is later; the grant as it now stands.

    `reported`: a worker saw the call go out (else the time is a start's, and the call may
    still go out later: the next start dates it again).
    """
    counted = max(grant.counted, sent)
    if counted > grant.counted:
        pool.limiter.move(grant.counted, counted)
    return replace(grant, counted=counted, sent=grant.sent or reported)


def sends(
    pools: Mapping[str, PoolState], grants: Mapping[tuple[str, int], Grant], event: KeyGrantsRedated
) -> dict[tuple[str, int], Grant]:
    """Count the grants of `event`'s calls in `pools` from when they went out; those grants as they now stand.

    In time order, so that the same calls give the same log whatever order they came in.
    """
    changed: dict[tuple[str, int], Grant] = {}
    for name, sent in sorted(event.calls.items(), key=lambda call: (call[1], call[0])):
        key = call_key(name)
        known = changed.get(key) or grants.get(key)
        if known is not None and (pool := pools.get(known.pool)) is not None:
            changed[key] = redate(pool, known, sent, not event.recovered)
    return changed


def apply(state: KeyPoolState, stored: StoredEvent) -> KeyPoolState:
    """Fold one event into the key pool state; events of other actors and unknown pools change nothing."""
    state.last_id = stored.id
    event = stored.event
    if not isinstance(event, KeyPoolEvent):
        return state
    match event:
        case KeyGrantsRedated():
            state.grants.update(sends(state.pools, state.grants, event))
        case KeyTokenGranted() | KeyCooledDown() | KeyParked() | KeyDisabled() | KeyLimitLearned():
            pool = state.pools.get(event.pool)
            if pool is None:
                return state
            apply_pool(pool, event)
            if isinstance(event, KeyTokenGranted):
                state.grants[(event.task_id, event.attempt)] = Grant(
                    event.pool, event.key_id, event.at, event.at
                )
                if len(state.grants) > MAX_GRANTS:
                    for old in list(state.grants)[: len(state.grants) // 2]:
                        del state.grants[old]
        case _:
            assert_never(event)
    return state


def replay(events: list[StoredEvent], state: KeyPoolState) -> KeyPoolState:
    """The state after folding `events` into `state`."""
    for stored in events:
        apply(state, stored)
    return state


# Version 1 held only the limiters' logs; it is not read (the log is replayed instead).
SNAPSHOT_VERSION = 2


def snapshot(state: KeyPoolState) -> dict[str, Any]:
    """The state as plain JSON-able data (the inverse of `restore`)."""
    return {
        "v": SNAPSHOT_VERSION,
        "last_id": state.last_id,
        "pools": {
            p.name: {
                "rate": p.rate,
                "margin": p.margin,
                "log": list(p.limiter.log),
                "cooldown_until": p.cooldown_until,
                "parked_until": p.parked_until,
                "disabled": {k: p.hints.get(k, "") for k in sorted(p.disabled)},
                "day": [p.day, p.day_calls],
                "last_throttled": p.last_throttled,
                "last_change": None if math.isinf(p.last_change) else p.last_change,
                "next_key": p.next_key,
                "granted": p.granted,
            }
            for p in state.pools.values()
        },
        "grants": [[t, a, g.pool, g.key_id, g.at, g.counted, g.sent] for (t, a), g in state.grants.items()],
    }


def restore(data: dict[str, Any], state: KeyPoolState) -> KeyPoolState:
    """`state` (fresh from the configuration) with `snapshot` data put back; raises ValueError
    on anything malformed. Pools no longer configured are dropped; a key whose hint changed
    is no longer disabled; a learned rate never passes the configured one."""
    try:
        if data["v"] != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {data['v']} is not {SNAPSHOT_VERSION}")
        for name, saved in data["pools"].items():
            pool = state.pools.get(name)
            if pool is None:
                continue
            last_change = saved["last_change"]
            pool.set_rate(int(saved["rate"]), 0.0)
            pool.set_margin(float(saved["margin"]), 0.0)
            pool.last_change = -math.inf if last_change is None else float(last_change)
            for at in saved["log"]:
                pool.limiter.record(float(at))
            pool.cooldown_until = float(saved["cooldown_until"])
            pool.parked_until = float(saved["parked_until"])
            pool.disabled = {
                str(k) for k, hint in saved["disabled"].items() if pool.hints.get(k, hint) == hint
            } & set(pool.key_ids)
            pool.day, pool.day_calls = str(saved["day"][0]), int(saved["day"][1])
            pool.last_throttled = float(saved["last_throttled"])
            pool.next_key, pool.granted = int(saved["next_key"]), int(saved["granted"])
        state.grants = {
            (str(t), int(a)): Grant(str(p), str(k), float(at), float(counted), bool(sent))
            for t, a, p, k, at, counted, sent in data["grants"]
        }
        state.last_id = str(data["last_id"])
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"malformed snapshot: {exc!r}") from exc
    return state
