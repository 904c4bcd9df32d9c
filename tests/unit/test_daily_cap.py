"""The daily spend cap's pure parts: the rule, its place among the refusals, its Lua text, the UTC
day, what the projection counts, and the config key."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.config import ConfigError, parse
from events.admission import Admission, Refusal, Seen, admit, capped, refusal_code, refuse
from events.catalogue import CreditsCharged, CreditsGranted, CreditsRefunded
from events.daily_spend import SPENT, SPENT_SECONDS, day_key, spend_ops
from events.days import next_utc_midnight, utc_day
from events.keys import Keys
from events.lua import lua_expression
from events.projection import project
from events.read_ops import Expire, HIncr
from events.redis_submit import SUBMIT_SCRIPT, lua_function
from tests.helpers import submitted

KEYS = Keys("cap")
# 2026-03-01 00:00:00 UTC, and the same day at 23:59:59.5.
MARCH_1 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
LATE = MARCH_1 + 86_399.5


def _seen(spent: int, balance: int = 100) -> Seen:
    return Seen(balance, welcomed=True, last_round=-1, current_round=0, waiting=0, spent_today=spent)


def test_a_spend_that_reaches_the_cap_passes_and_one_that_passes_it_is_refused() -> None:
    assert capped(spent=3, price=2, cap=5) == 0  # 5 of 5: exactly at the cap
    assert capped(spent=4, price=2, cap=5) == 1
    assert capped(spent=9, price=2, cap=0) == 0  # 0: no cap
    assert capped(spent=9, price=0, cap=5) == 0  # a free task is charged nothing
    assert capped(spent=-2, price=7, cap=5) == 0  # today's refunds of older charges make room


def test_over_the_cap_a_submit_is_refused_with_the_spend_the_cap_and_the_next_utc_midnight() -> None:
    event = submitted(user="ann", at=LATE)
    cap = Admission(price=2, daily_cap=5)
    assert not isinstance(admit(event, cap, _seen(3), 0, 1), Refusal)
    refusal = admit(event, cap, _seen(4), 0, 1)
    assert refusal == Refusal(
        "daily_cap",
        balance=100,
        price=2,
        waiting=0,
        wait_ms=500,
        spent_today=4,
        daily_cap=5,
        until=MARCH_1 + 86_400,
    )


def test_a_short_balance_is_refused_before_the_cap_and_the_bounds_before_both() -> None:
    """A 402 comes first: waiting until midnight would not help a balance short of the price."""
    cap = Admission(price=2, daily_cap=5, max_waiting=10)
    poor = refuse(cap, _seen(4, balance=1), LATE)
    assert poor is not None and poor.reason == "credits"
    full = Seen(100, True, -1, 0, waiting=10, spent_today=4)
    assert (refused := refuse(cap, full, LATE)) is not None and refused.reason == "queue_full"
    assert refusal_code(0, 0, 0, 1) == 4 and refusal_code(0, 0, 1, 1) == 3 and refusal_code(0, 0, 0, 0) == 0


@given(
    spent=st.integers(-50, 50),
    price=st.integers(0, 10),
    cap=st.integers(0, 60),
    balance=st.integers(0, 60),
)
def test_an_accepted_submit_never_takes_the_days_spend_over_a_cap(
    spent: int, price: int, cap: int, balance: int
) -> None:
    result = admit(submitted(at=LATE), Admission(price=price, daily_cap=cap), _seen(spent, balance), 0, 1)
    if not isinstance(result, Refusal):
        assert cap == 0 or price == 0 or spent + price <= cap
    elif result.reason == "daily_cap":
        assert balance >= price and spent + price > cap > 0


def test_the_script_runs_the_cap_rule_translated_from_python() -> None:
    expected = "(cap > 0 and (price > 0 and ((spent + price) > cap and 1 or 0) or 0) or 0)"
    assert lua_expression(capped) == expected
    for rule in (capped, refusal_code):
        assert lua_function(rule) in SUBMIT_SCRIPT
    assert "capped(spent, tonumber(ARGV[11]), tonumber(ARGV[17]))" in SUBMIT_SCRIPT


def test_a_day_is_the_utc_calendar_day() -> None:
    assert utc_day(MARCH_1) == "2026-03-01" and utc_day(LATE) == "2026-03-01"
    assert utc_day(MARCH_1 - 0.001) == "2026-02-28"
    assert next_utc_midnight(MARCH_1) == MARCH_1 + 86_400  # midnight itself starts its day
    assert next_utc_midnight(LATE) == MARCH_1 + 86_400
    assert next_utc_midnight(MARCH_1 - 0.001) == MARCH_1


def test_charges_and_refunds_count_on_their_own_utc_day_which_expires() -> None:
    """The charge adds to the day of its `at`, a refund takes off the day of its own `at`; each
    sets the day's count to expire, and a grant does not count."""
    charged = CreditsCharged(user_id="ann", task_id="t", amount=2, at=LATE)
    refunded = CreditsRefunded(user_id="ann", task_id="t", amount=2, reason="failed", at=LATE + 1)
    today, tomorrow = day_key(KEYS, "ann", LATE), day_key(KEYS, "ann", LATE + 1)
    assert today != tomorrow and today != KEYS.user("ann") and today.startswith(KEYS.user("ann/"))
    assert [HIncr(today, SPENT, 2), Expire(today, SPENT_SECONDS)] == spend_ops(KEYS, "ann", LATE, 2)
    assert [op for op in project(charged, KEYS) if op.key == today] == spend_ops(KEYS, "ann", LATE, 2)
    assert [op for op in project(refunded, KEYS) if op.key == tomorrow] == [
        HIncr(tomorrow, SPENT, -2),
        Expire(tomorrow, SPENT_SECONDS),
    ]
    granted = project(CreditsGranted(user_id="ann", amount=5, at=LATE), KEYS)
    assert not [op for op in granted if "/" in op.key]
    assert SPENT_SECONDS >= 86_400  # a count written just after midnight lives through its day


def test_the_cap_is_a_config_key_of_credits() -> None:
    assert parse({}, {}).credits.daily_cap == 0
    assert parse({"credits": {"daily_cap": 30}}, {}).credits.daily_cap == 30
    for bad in (-1, 1):  # 1 is under the fitting price (2): fitting could never be submitted
        with pytest.raises(ConfigError, match="daily_cap"):
            parse({"credits": {"daily_cap": bad}}, {})
    assert parse({"credits": {"daily_cap": 1, "fitting": 1}}, {}).credits.daily_cap == 1
