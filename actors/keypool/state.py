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

A pool's calls of the Pacific day are counted by its grants (`count_day`), whatever its
limits: a day limit (`rpd`, the spend cap) set at a restart finds the day's calls counted,
from a snapshot as from the log. A pool that reaches its spend cap is parked by a
`key.parked` written with the grant that reached it (`actors.keypool.decide.day_park`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from actors.config import Config, counted_against
from actors.forecast import window_capacity as window_capacity
from actors.keypool.pool import PoolState as PoolState
from actors.keypool.pool import Tuning as Tuning
from actors.keypool.pool import copy_pools as copy_pools
from actors.keypool.pool import link as link
from events.catalogue import (
    KeyCooledDown,
    KeyDisabled,
    KeyGrantsRedated,
    KeyLimitLearned,
    KeyParked,
    KeyTokenGranted,
    StoredEvent,
)

# Grants remembered (a repeated acquire gets the same token; a late send report finds its
# grant); past it the older half is forgotten, on replay as live.
MAX_GRANTS = 10_000

PoolEvent = KeyTokenGranted | KeyCooledDown | KeyParked | KeyDisabled | KeyLimitLearned
KeyPoolEvent = PoolEvent | KeyGrantsRedated


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

    def __post_init__(self) -> None:
        link(self.pools)


def from_config(config: Config) -> KeyPoolState:
    """The state before any event: the configured pools, tuned by `[keypool]`."""
    k = config.keypool
    tuning = Tuning(
        decrease=k.decrease,
        probe_after=k.probe_after_windows,
        probe_step=k.probe_step,
        margin=k.margin_seconds,
    )
    return KeyPoolState(
        pools={
            p.name: PoolState(
                name=p.name,
                rpm=p.rate,
                window=p.window_seconds,
                key_ids=p.key_ids,
                rpd=p.rpd,
                tuning=tuning,
                hints=p.key_hints,
                service_tier=p.service_tier,
                price_per_image=p.price_per_image,
                max_spend_per_day=p.max_spend_per_day,
                counts_against=counted_against(config.pools, p.name),
            )
            for p in config.pools
        }
    )


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
            for log in pool.over:
                log.record(event.at)
            pool.next_key += 1
            pool.granted += 1
            pool.count_day(event.at)  # for rpd and the spend cap, counted with or without them
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
        for log in (pool.limiter, *pool.over):
            log.move(grant.counted, counted)
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
