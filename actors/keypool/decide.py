"""Pure key-pool decisions: which pool and key serves the next call, and what upstream's answers teach.

A pool is one upstream project. Its limits are rolling-window limiters (requests and images
per window, at the smaller of the two rates) and a daily counter that resets at midnight
Pacific. A per-minute 429 cools the pool down for upstream's RetryInfo delay and lowers the
pool's rate (the real limit is lower than configured); after a clean, busy period the rate
is probed back up additively, never above the configured one. A per-day 429 parks the pool
until midnight Pacific; a rejected key is disabled and the pool goes on with its other keys.
A pool whose grants of the Pacific day reach its daily spend cap is parked the same way, by a
`key.parked` written with the grant that reached it, and raises `spend_cap:<pool>`.
Decisions return events and change nothing: the caller appends them and folds them in with
`actors.keypool.state.apply`. Time is always a parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from actors.forecast import window_capacity as window_capacity
from actors.keypool.routes import Want, kept, pools_for, wanted
from actors.keypool.state import (
    KeyPoolEvent,
    KeyPoolState,
    apply_pool,
    call_key,
    call_name,
    copy_pools,
    sends,
)
from actors.keypool.state import PoolState as PoolState
from actors.keypool.state import Tuning as Tuning
from actors.messages import CallFailure
from actors.providers.base import Failure
from actors.queue.alerts import spend_cap_alert
from events.catalogue import (
    AlertRaised,
    KeyCooledDown,
    KeyDisabled,
    KeyEvent,
    KeyGrantsRedated,
    KeyLimitLearned,
    KeyParked,
    KeyTokenGranted,
)
from events.days import next_pacific_midnight

# How much of the window a 429 at the right rate adds to the margin: 10 ms at 1 s windows,
# where one late packet of a loaded machine is enough for such a 429.
MARGIN_STEP = 0.01
# The quota_id of a park for the pool's own daily spend cap (a day quota's names upstream's quota).
SPEND_CAP_QUOTA = "spend_cap"
# The quota_id of a park for the pool's own configured `rpd` (its day limit reached here).
RPD_QUOTA = "rpd"


def choose(pools: list[PoolState], now: float) -> PoolState | None:
    """The pool with the most budget left at `now`, or None when every pool is spent.

    On a tie, a pool that counts against another (a priority pool against its project's
    standard one, whose budget it can never exceed) wins over one that does not, whatever
    their order: it serves whenever it has as many places left as the pool it counts against.
    """
    best: PoolState | None = None
    best_free = 0
    for pool in pools:
        free = pool.available(now)
        if free > best_free or (
            free and free == best_free and pool.over and best is not None and not best.over
        ):
            best, best_free = pool, free
    return best


def soonest(
    pools: list[PoolState], now: float, lead: float, keep: float = 0.0
) -> tuple[PoolState, float] | None:
    """The pool whose next place frees first and when, if that is at most `lead` seconds away
    (on a tie, one that counts against another, as in `choose`); with `keep`, a place beyond
    the `kept` ones."""
    best = min(pools, key=lambda p: (p.next_free_at(now, kept(p, keep) + 1), not p.over), default=None)
    if best is None:
        return None
    at = best.next_free_at(now, kept(best, keep) + 1)
    return (best, at) if at <= now + lead else None


def next_free_at(pools: list[PoolState], now: float, keep: float = 0.0) -> float:
    """The earliest time any pool can grant again (inf when none ever can); with `keep`, grant
    beyond the places it keeps for other lanes."""
    return min((p.next_free_at(now, kept(p, keep) + 1) for p in pools), default=math.inf)


def usable_at(pools: list[PoolState], now: float) -> float:
    """The earliest time at or after `now` when some pool is neither parked nor out of keys."""
    return min((max(now, p.parked_until) for p in pools if p.healthy_keys), default=math.inf)


def grant(pool: PoolState, task_id: str, attempt: int, at: float) -> KeyTokenGranted:
    """One token of `pool` for an attempt's call at `at` (a moment ahead, for a grant made ahead)."""
    if pool.available(at) < 1:
        raise ValueError(f"pool {pool.name} has no token at {at}")
    return KeyTokenGranted(
        pool=pool.name,
        key_id=pool.next_key_id(),
        task_id=task_id,
        attempt=attempt,
        capacity=pool.limiter.capacity,
        window=pool.window,
        at=at,
    )


def reported_sends(state: KeyPoolState, reported: Mapping[str, float], now: float) -> KeyGrantsRedated | None:
    """The record of the reported sends (call name -> wire time) that tell the log something new."""
    calls = {}
    for name, sent in reported.items():
        known = state.grants.get(call_key(name))
        if known is not None and (not known.sent or sent > known.counted):
            calls[name] = sent
    return KeyGrantsRedated(calls=calls, at=now) if calls else None


def recovered_sends(state: KeyPoolState, now: float) -> KeyGrantsRedated | None:
    """At a start: the grants still in their window whose sending the log lacks, counted from `now`.

    Their calls went out before the crash (so before `now`), or go out later and are
    reported then; `now` is never earlier than the truth. Grants made ahead for later
    wait for their reports.
    """
    calls = {}
    for (task_id, attempt), known in state.grants.items():
        pool = state.pools.get(known.pool)
        if known.sent or known.counted >= now or pool is None or not pool.limiter.log:
            continue
        if known.counted >= pool.limiter.log[0]:
            calls[call_name(task_id, attempt)] = now
    return KeyGrantsRedated(calls=calls, recovered=True, at=now) if calls else None


def day_park(pool: PoolState, key_id: str, at: float, now: float) -> KeyParked | None:
    """At `now`, the park of `pool` until the Pacific midnight after `at` once its calls of
    that day reached what its spend cap pays for, or its configured `rpd` (`key_id`: the key of
    the call that reached it, if any); None under both, or when it is parked until then
    already. A parked pool is one its tasks' fallback routes move on from."""
    at_rpd = bool(pool.rpd) and pool.calls_on(at) >= pool.rpd
    if not pool.capped(at) and not at_rpd:
        return None
    until = next_pacific_midnight(at)
    if pool.parked_until >= until:
        return None
    if pool.capped(at):
        quota, reason = SPEND_CAP_QUOTA, pool.spend_text(at)
    else:
        quota, reason = RPD_QUOTA, f"day limit: {pool.rpd} calls today (rpd)"
    return KeyParked(pool=pool.name, key_id=key_id, until=until, quota_id=quota, reason=reason, at=now)


@dataclass(frozen=True, slots=True)
class Round:
    """One turn of the grant loop: the events to append and fold in (the reported sends, the
    parks of pools found over their spend cap, then the grants, each followed by the park of
    the pool it took to its cap), the alerts of those parks (appended after them, in the same
    append), and when a pool can grant next once all of them count."""

    events: list[KeyPoolEvent]
    grants: list[KeyTokenGranted]
    next_free: float
    alerts: tuple[AlertRaised, ...] = ()


def grant_round(
    state: KeyPoolState,
    reported: Mapping[str, float],
    waiting: Iterator[Want | tuple[str, int]],
    now: float,
    lead: float,
    shut: set[str] | None = None,
) -> Round:
    """Tokens for the `waiting` attempts, in their order, while a pool each may use
    (`actors.keypool.routes.pools_for`) has a place now or within `lead` seconds (granted for
    then), counting the `reported` sends first. An attempt whose routes have no place is
    skipped (it was taken from the line: its caller puts it back); the round ends once no
    pool has a place for anyone.

    The grants are tried on copies of the pools with the fold's own rules. The sends are
    recorded only with grants (or parks): no grant is then written without the sends it
    relied on, and a turn that grants nothing writes nothing but the park of a pool over its
    spend cap and not yet parked (its cap was lowered by a restart), with the sends.
    """
    pools = copy_pools(state.pools)
    record = reported_sends(state, reported, now)
    if record is not None:
        sends(pools, state.grants, record)
    candidates = list(pools.values())
    granted: list[KeyTokenGranted] = []
    decided: list[KeyPoolEvent] = []
    alerts: list[AlertRaised] = []

    def park(pool: PoolState, key_id: str, at: float) -> None:
        if (parked := day_park(pool, key_id, at, now)) is not None:
            calls, price = pool.calls_on(at), pool.price_per_image
            if parked.quota_id == SPEND_CAP_QUOTA:
                alerts.append(spend_cap_alert(parked, calls, price, pool.max_spend_per_day))
            apply_pool(pool, parked)
            decided.append(parked)

    for over in candidates:
        park(over, "", now)
    wake = math.inf  # when an attempt skipped for want of a place on its routes may be served
    exhausted = False
    while True:
        # Nothing is taken from the line while no pool has a place for anyone.
        pool, at = choose(candidates, now), now
        ahead = None if pool is not None else soonest(candidates, now, lead)
        if pool is None and ahead is None:
            break
        item = next(waiting, None)
        if item is None:
            exhausted = True
            break
        want = wanted(item)
        allowed = candidates
        if want.routes is not None:  # only its routes' pools: choose again among those
            allowed = pools_for(pools, want, now)
            pool, at = choose(allowed, now), now
            ahead = None if pool is not None else soonest(allowed, now, lead)
        if want.keep:
            # Its lane must leave other lanes' reserved places: only a pool with more left.
            roomy = [p for p in allowed if p.available(now) > kept(p, want.keep)]
            pool, at = choose(roomy, now), now
            ahead = None if pool is not None else soonest(allowed, now, lead, want.keep)
            if pool is None and ahead is None:  # its lane waits for the next turn; later lanes go on
                if shut is not None:
                    shut.add(want.lane)
                # Due when a place beyond the kept ones frees, not when any place does: places
                # are free now, only kept ones.
                wake = min(wake, next_free_at(allowed, now, want.keep))
                continue
        if pool is None:
            if ahead is None:
                # Its routes have no place (other pools have): it waits, and later attempts
                # of other routes go on; its caller puts it back in the line.
                named = [pools[n] for names in want.routes or () for n in names if n in pools]
                wake = min(wake, next_free_at(allowed or named or candidates, now))
                continue
            pool, at = ahead
        event = grant(pool, want.task_id, want.attempt, at)
        apply_pool(pool, event)
        granted.append(event)
        decided.append(event)
        park(pool, event.key_id, at)
    events: list[KeyPoolEvent] = [record] if record is not None and decided else []
    # When every waiter asked was served or skipped, the next turn is due when a skipped one
    # may be served, not when some other route frees a place.
    free = wake if exhausted and math.isfinite(wake) else min(wake, next_free_at(candidates, now))
    return Round([*events, *decided], granted, free, tuple(alerts))


@dataclass(frozen=True, slots=True)
class Lesson:
    """What a 429 teaches: `kind` ("quota", "timing" or "decrease"), the new rate and margin."""

    kind: str
    rate: int
    margin: float


def throttled(
    pool: PoolState, now: float, retry_after: float | None, quota_value: int | None
) -> tuple[float, Lesson | None]:
    """A per-minute 429 at `now`: the pool's cooldown end after it, and what it teaches (None: nothing).

    The cooldown lasts upstream's RetryInfo delay, or one window when it gave none; it only
    ever grows. At most once per window (the 429s of one overshoot arrive together) the pool
    learns:
    - upstream's quotaValue is below the rate: the rate becomes quotaValue ("quota");
    - quotaValue equals the rate: the limit is right and the call reached upstream too
      early after the one whose place it took: the margin grows by MARGIN_STEP of the
      window ("timing"), up to its cap. Additive, since every window pays the margin: the
      429s of one stall (a burst of submits starving the workers of CPU) must not double it;
    - otherwise (no quotaValue, or the margin is at its cap): rate x decrease ("decrease").
    """
    wait = retry_after if retry_after is not None and retry_after >= 0 else pool.window
    until = max(pool.cooldown_until, now + wait)
    if now - pool.last_change < pool.window:
        return until, None
    if quota_value and quota_value < pool.rate:
        return until, Lesson("quota", quota_value, pool.margin)
    if quota_value and pool.margin < pool.tuning.max_margin * pool.window - 1e-9:
        return until, Lesson("timing", pool.rate, pool.margin + MARGIN_STEP * pool.window)
    target = max(1, math.floor(pool.rate * pool.tuning.decrease))
    return until, (Lesson("decrease", target, pool.margin) if target < pool.rate else None)


def probe(pool: PoolState, now: float) -> KeyLimitLearned | None:
    """After a clean, busy period, one step back up: the event of the step, or None.

    Clean: no 429 for `probe_after` windows since the last 429 or change. Busy: the limiter
    is full right now, so the step would be used (an idle pool learns nothing). A widened
    margin is halved first; then the rate grows by `probe_step` of the configured rate,
    never past it.
    """
    quiet_since = max(pool.last_throttled, pool.last_change)
    if now - quiet_since < pool.tuning.probe_after * pool.window or pool.limiter.available(now) > 0:
        return None
    reason = f"no 429 for {pool.tuning.probe_after:g} busy windows: probing the {{}} back"
    if pool.margin > pool.tuning.margin:
        halved = pool.margin / 2 if pool.margin / 2 > pool.tuning.margin + 1e-9 else 0.0
        return limit_learned(pool, pool.rate, halved, reason.format("margin"), now)
    if pool.rate >= pool.rpm:
        return None
    step = max(1, round(pool.rpm * pool.tuning.probe_step))
    return limit_learned(pool, pool.rate + step, pool.margin, reason.format("rate"), now)


def probe_all(pools: list[PoolState], now: float) -> list[KeyLimitLearned]:
    """Probe every pool (see `probe`); the events of the steps taken."""
    return [event for pool in pools if (event := probe(pool, now)) is not None]


_LEARNED = {
    "quota": "429 with room in the window: upstream's limit is lower",
    "timing": "429 at the right rate: calls reach upstream unevenly; wider margin",
    "decrease": "429 with room in the window: lowering the rate",
}


def limit_learned(pool: PoolState, rate: int, margin: float, reason: str, now: float) -> KeyLimitLearned:
    """The event that gives the pool `rate` and `margin` (each kept within its bounds)."""
    trial = pool.copy()
    trial.set_rate(rate, now)
    trial.set_margin(margin, now)
    return KeyLimitLearned(
        pool=pool.name,
        rpm=trial.rate,
        previous=pool.rate,
        configured=pool.rpm,
        margin=round(trial.margin, 4),
        reason=reason,
        at=now,
    )


def learn(pool: PoolState, report: CallFailure, now: float) -> list[KeyEvent]:
    """The key events a refused call gives the pool (maybe none).

    THROTTLED cools the pool (every one: the next probe waits from the last) and may teach
    it a rate or margin; QUOTA_DAY parks it until midnight Pacific; KEY_REJECTED disables
    the key, named with its hint so that a replaced key is told apart.
    """
    if report.failure is Failure.THROTTLED:
        until, lesson = throttled(pool, now, report.retry_after, report.quota_value)
        events: list[KeyEvent] = [
            KeyCooledDown(
                pool=pool.name,
                key_id=report.key_id,
                until=until,
                retry_after=until - now,
                quota_id=report.quota_id,
                at=now,
            )
        ]
        if lesson is not None:
            quota = f"{report.quota_id or 'unnamed quota'}, quotaValue {report.quota_value}"
            reason = f"{_LEARNED[lesson.kind]} ({quota})"
            events.append(limit_learned(pool, lesson.rate, lesson.margin, reason, now))
        return events
    if report.failure is Failure.QUOTA_DAY:
        until = next_pacific_midnight(now)
        if until <= pool.parked_until:
            return []
        return [
            KeyParked(
                pool=pool.name,
                key_id=report.key_id,
                until=until,
                quota_id=report.quota_id,
                reason=report.reason,
                at=now,
            )
        ]
    if report.failure is Failure.KEY_REJECTED and report.key_id in pool.healthy_keys:
        return [
            KeyDisabled(
                pool=pool.name,
                key_id=report.key_id,
                hint=pool.hints.get(report.key_id, ""),
                code=report.code,
                reason=report.reason,
                at=now,
            )
        ]
    return []
