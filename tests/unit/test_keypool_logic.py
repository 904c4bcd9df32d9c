"""The pure key-pool state machine: cooldowns, parking, disabled keys, learned rates, daily quotas."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.audit import max_in_window
from actors.keypool.decide import (
    CallFailure,
    choose,
    grant,
    learn,
    next_free_at,
    probe,
    throttled,
    usable_at,
)
from actors.keypool.limiter import SlidingWindowLog
from actors.keypool.state import PoolState, Tuning, apply_pool
from actors.providers.base import Failure
from events.catalogue import KeyCooledDown, KeyDisabled, KeyEvent, KeyLimitLearned, KeyParked
from events.days import PACIFIC, next_pacific_midnight, pacific_day


def pool(name: str = "a", rpm: int = 600, keys: int = 1, **kw: object) -> PoolState:
    """A pool with a 1 s window: rpm 600 is 10 calls per rolling second."""
    return PoolState(
        name=name, rpm=rpm, window=1.0, key_ids=tuple(f"{name}#{i + 1}" for i in range(keys)), **kw
    )  # type: ignore[arg-type]


def fold(p: PoolState, events: list[KeyEvent]) -> list[KeyEvent]:
    """Apply a decision's events to the pool, as the actor does once they are written."""
    for event in events:
        apply_pool(p, event)
    return events


def throttle(p: PoolState, now: float, retry_after: float | None, quota_value: int | None) -> str:
    """A per-minute 429 decided and folded in; what it taught ("" for nothing)."""
    lesson = throttled(p, now, retry_after, quota_value)[1]
    refused = CallFailure(
        key_id=p.key_ids[0],
        failure=Failure.THROTTLED,
        code=429,
        retry_after=retry_after,
        quota_value=quota_value,
    )
    fold(p, learn(p, refused, now))
    return lesson.kind if lesson else ""


def take(p: PoolState, at: float) -> str:
    """One token decided and folded in; its key id."""
    event = grant(p, "t", p.granted + 1, at)
    apply_pool(p, event)
    return event.key_id


def fill(p: PoolState, now: float) -> None:
    """Take every token the pool has at `now` (it is busy)."""
    while p.available(now):
        take(p, now)


def step(p: PoolState, now: float) -> str:
    """A probe decided and folded in: "margin", "rate" or "" (none taken)."""
    event = probe(p, now)
    if event is None:
        return ""
    apply_pool(p, event)
    return "margin" if event.reason.endswith("margin back") else "rate"


def test_a_per_minute_429_cools_the_pool_for_retry_info_and_learns_quota_value() -> None:
    """Cooldown = RetryInfo delay; a quotaValue below the rate becomes the rate at once."""
    p = pool(rpm=900)
    assert p.limiter.capacity == 15
    assert throttle(p, now=10.0, retry_after=0.4, quota_value=600) == "quota"
    assert p.cooldown_until == 10.4 and p.rate == 600 and p.limiter.capacity == 10
    assert p.available(10.3) == 0 and p.next_free_at(10.3) >= 10.4
    # More 429s of the same overshoot: the cooldown only grows, the rate drops once per window.
    refused = CallFailure(key_id="a#1", failure=Failure.THROTTLED, code=429, retry_after=0.1, quota_value=600)
    events = fold(p, learn(p, refused, 10.2))
    assert [type(e) for e in events] == [KeyCooledDown] and p.cooldown_until == 10.4
    assert p.rate == 600 and p.last_throttled == 10.2


def test_a_429_at_the_right_rate_widens_the_margin_then_lowers_the_rate() -> None:
    """quotaValue equal to the rate: timing, not the limit; the margin grows by 1% of the window
    per window with such 429s, up to its cap (10% of the window), and only a 429 beyond that
    lowers the rate."""
    p = pool(rpm=600, tuning=Tuning(margin=0.02))
    learned, margins = [], []
    for t in range(0, 18, 2):
        learned.append(throttle(p, now=float(t), retry_after=0.1, quota_value=600))
        margins.append(round(p.margin, 4))
    assert learned == ["timing"] * 8 + ["decrease"]
    assert margins == [0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.1]
    assert p.margin == pytest.approx(0.1) and p.limiter.window == pytest.approx(1.1) and p.rate == 420
    margins, now = [], 100.0
    while True:
        fill(p, now)
        if step(p, now) != "margin":
            break
        margins.append(round(p.margin, 4))
        now += 11.0
    assert margins == [0.05, 0.025, 0.02] and p.rate == 450


def test_without_quota_value_the_rate_drops_multiplicatively_and_without_retry_info_one_window() -> None:
    """A bare 429 cools for one window and multiplies the rate by the decrease factor."""
    p = pool(rpm=600)
    assert throttle(p, now=5.0, retry_after=None, quota_value=None) == "decrease"
    assert p.cooldown_until == 6.0 and p.rate == 420
    assert throttle(p, now=6.5, retry_after=None, quota_value=None) == "decrease" and p.rate == 294


def test_probing_needs_a_clean_busy_period_and_never_passes_the_configured_rate() -> None:
    """No probe while idle or soon after a 429; then +5% of the configured rate per step, capped."""
    p = pool(rpm=600, tuning=Tuning(probe_after=10, probe_step=0.05))
    throttle(p, now=0.0, retry_after=0.0, quota_value=480)
    assert p.rate == 480
    assert step(p, 5.0) == ""  # too soon
    assert step(p, 20.0) == ""  # idle: the limiter has room
    fill(p, 20.0)
    assert step(p, 20.0) == "rate" and p.rate == 510
    rates = []
    now = 20.0
    for _ in range(20):
        now += 11.0
        fill(p, now)
        if step(p, now):
            rates.append(p.rate)
    assert rates[-1] == 600 and max(rates) == 600 and rates == sorted(rates)


def disable(p: PoolState, key_id: str) -> None:
    """Upstream rejected a key: decided and folded in."""
    fold(p, learn(p, CallFailure(key_id=key_id, failure=Failure.KEY_REJECTED, code=403), 0.0))


def park(p: PoolState, until: float) -> None:
    """The pool's daily quota ran out until `until`."""
    fold(p, [KeyParked(pool=p.name, key_id=p.key_ids[0], until=until, quota_id="d", reason="d", at=0.0)])


def test_disabled_keys_are_skipped_and_a_pool_without_keys_is_unusable() -> None:
    """Round robin goes over healthy keys only; with none left the pool never grants."""
    a = pool("a", keys=3)
    disable(a, "a#2")
    assert [take(a, 0.0) for _ in range(4)] == ["a#1", "a#3", "a#1", "a#3"]
    disable(a, "a#1")
    disable(a, "a#3")
    b = pool("b")
    assert choose([a, b], 0.5) is b and usable_at([a, b], 0.5) == 0.5
    disable(b, "b#1")
    assert choose([a, b], 0.5) is None and usable_at([a, b], 0.5) == math.inf
    assert next_free_at([a, b], 0.5) == math.inf


def test_a_parked_pool_waits_for_its_time_and_the_others_carry_on() -> None:
    """Parking stops one pool until `parked_until`; usable_at is the earliest pool back."""
    a, b = pool("a"), pool("b")
    park(a, 100.0)
    assert choose([a, b], 1.0) is b
    park(b, 50.0)
    assert choose([a, b], 1.0) is None and usable_at([a, b], 1.0) == 50.0
    assert choose([a, b], 50.0) is b


def test_the_daily_limit_counts_per_pacific_day() -> None:
    """rpd calls on one Pacific day, then none until the next midnight there."""
    noon = dt.datetime(2026, 11, 29, 12, 0, tzinfo=PACIFIC).timestamp()
    p = pool(rpm=6000, rpd=3)
    granted = [take(p, noon + i) for i in range(3)]
    assert len(granted) == 3 and p.available(noon + 5) == 0
    midnight = next_pacific_midnight(noon)
    assert p.next_free_at(noon + 5) == midnight
    assert p.available(midnight) == 3 and pacific_day(midnight) == "2026-11-30"


def test_pacific_midnight_across_daylight_saving() -> None:
    """The day that ends summer time is 25 hours long in Los Angeles."""
    start = dt.datetime(2026, 11, 1, 0, 0, tzinfo=PACIFIC).timestamp()
    assert next_pacific_midnight(start) - start == 25 * 3600
    assert next_pacific_midnight(start - 1) == start


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=200).map(sorted),
    st.lists(st.integers(1, 12), min_size=1, max_size=5),
)
def test_resizing_never_lets_a_window_hold_more_than_the_larger_capacity(
    requests: list[float], capacities: list[int]
) -> None:
    """Whatever the resizes, no window holds more than the largest capacity in force."""
    limiter = SlidingWindowLog(capacity=capacities[0], window=1.0)
    granted: list[float] = []
    step = max(1, len(requests) // len(capacities))
    for i, t in enumerate(requests):
        if i and i % step == 0:
            limiter.resize(capacities[min(i // step, len(capacities) - 1)])
        if limiter.take(t):
            granted.append(t)
    assert max_in_window(granted, 1.0) <= max(capacities)


def test_re_dating_a_grant_to_its_send_time_only_ever_delays_the_next_grant() -> None:
    """A grant at 0.0 sent at 0.3 frees its place at 1.3, not 1.0; an unknown time changes nothing."""
    limiter = SlidingWindowLog(capacity=2, window=1.0)
    assert limiter.take(0.0) and limiter.take(0.1)
    limiter.move(0.0, 0.3)
    assert list(limiter.log) == [0.1, 0.3]
    assert limiter.next_free_at(0.5) == 1.1
    limiter.move(5.0, 6.0)
    limiter.move(0.3, 0.2)  # never earlier
    assert list(limiter.log) == [0.1, 0.3]


def test_learn_turns_each_refusal_into_its_key_events() -> None:
    """A day quota parks once until midnight Pacific; a rejected key is disabled once, with its hint."""
    p = pool("a", keys=2, hints={"a#1": "w3Rt", "a#2": "x7Qz"})
    noon = dt.datetime(2026, 11, 29, 12, 0, tzinfo=PACIFIC).timestamp()
    day = CallFailure(key_id="a#1", failure=Failure.QUOTA_DAY, code=429, quota_id="PerDay", reason="day")
    parked = fold(p, learn(p, day, noon))
    assert [type(e) for e in parked] == [KeyParked] and parked[0].until == next_pacific_midnight(noon)
    assert learn(p, day, noon + 1) == [] and not p.usable(noon + 1)
    bad = CallFailure(key_id="a#2", failure=Failure.KEY_REJECTED, code=403, reason="denied")
    disabled = fold(p, learn(p, bad, noon))
    assert [(type(e), e.hint, e.code) for e in disabled] == [(KeyDisabled, "x7Qz", 403)]  # type: ignore[union-attr]
    assert learn(p, bad, noon) == [] and p.healthy_keys == ("a#1",)
    minute = CallFailure(key_id="a#1", failure=Failure.THROTTLED, code=429, retry_after=0.5, quota_value=300)
    kinds = [type(e) for e in fold(p, learn(p, minute, noon))]
    assert kinds == [KeyCooledDown, KeyLimitLearned] and p.rate == 300


def test_a_disabled_key_replaced_since_is_not_held_disabled() -> None:
    """A key.disabled names the key's hint; once the configured key has another, the key stays in use."""
    p = pool("a", keys=2, hints={"a#1": "w3Rt", "a#2": "NEW1"})
    fold(p, [KeyDisabled(pool="a", key_id="a#2", hint="x7Qz", code=403, reason="denied", at=1.0)])
    assert p.healthy_keys == ("a#1", "a#2")
    fold(p, [KeyDisabled(pool="a", key_id="a#2", hint="NEW1", code=403, reason="denied", at=2.0)])
    assert p.healthy_keys == ("a#1",)
