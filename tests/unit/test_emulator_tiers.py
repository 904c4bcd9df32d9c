"""The emulator's service tiers, with time passed in: priority has its own window and counts
against standard, a priority call over its limit is served at standard, flex has its own
window, and each model its own budget."""

from __future__ import annotations

import datetime as dt

import pytest

from emulator.tiers import ModelQuota, requested_tier
from emulator.wire import BadRequest, EmulatorConfig, PoolSpec, TierLimits, parse_pool

NOON_UTC = dt.datetime(2026, 6, 1, 19, 0, tzinfo=dt.UTC)
# Per 1 s window: standard 6, priority 2, flex 3.
LIMITS = TierLimits(rpm=360, priority_rpm=120, flex_rpm=180)


def served(quota: ModelQuota, tier: str, now: float) -> str:
    """The tier that served a call, or "429"."""
    verdict = quota.admit(tier, now, NOON_UTC)
    return verdict.tier if verdict.accepted else "429"


def test_priority_over_its_limit_is_served_at_standard_and_counts_against_standard() -> None:
    """Two priority calls are served at priority, the third at standard (a downgrade); all
    three take standard places, so three standard calls fill the window and the next call,
    whatever its tier, is a 429."""
    quota = ModelQuota(LIMITS, window=1.0, rpd=0)
    assert [served(quota, "priority", 0.0) for _ in range(3)] == ["priority", "priority", "standard"]
    assert quota.downgraded == 1
    assert [served(quota, "standard", 0.1) for _ in range(3)] == ["standard"] * 3
    assert served(quota, "standard", 0.2) == "429" and served(quota, "priority", 0.2) == "429"
    assert quota.standard.max_window_calls == 6 and quota.priority is not None
    assert quota.priority.max_window_calls == 2
    # A window after the first calls, priority has its places again.
    assert served(quota, "priority", 1.0) == "priority"


def test_a_priority_call_with_priority_room_but_no_standard_place_is_refused() -> None:
    """Six standard calls fill the standard window: a priority call is a 429 (it would count
    against standard), and takes no priority place."""
    quota = ModelQuota(LIMITS, window=1.0, rpd=0)
    assert [served(quota, "standard", 0.0) for _ in range(6)] == ["standard"] * 6
    refused = quota.admit("priority", 0.5, NOON_UTC)
    assert not refused.accepted and refused.limit == "minute" and refused.retry_after == pytest.approx(0.5)
    assert quota.priority is not None and quota.priority.max_window_calls == 0


def test_flex_has_its_own_window_counted_against_nothing_else() -> None:
    """Three flex calls fill flex's window without a standard place; the fourth is a 429."""
    quota = ModelQuota(LIMITS, window=1.0, rpd=0)
    assert [served(quota, "flex", 0.0) for _ in range(4)] == ["flex", "flex", "flex", "429"]
    assert quota.standard.max_window_calls == 0
    assert [served(quota, "standard", 0.1) for _ in range(6)] == ["standard"] * 6


def test_a_project_without_priority_serves_every_priority_call_at_standard() -> None:
    """priority_rpm 0: no priority place at all; each priority call is a downgrade."""
    quota = ModelQuota(TierLimits(360, 0, 0), window=1.0, rpd=0)
    assert [served(quota, "priority", 0.0) for _ in range(2)] == ["standard", "standard"]
    assert served(quota, "flex", 0.0) == "standard" and quota.downgraded == 2


def test_the_daily_limit_refuses_priority_too() -> None:
    """A project's day spent: a priority call is a per-day 429."""
    quota = ModelQuota(LIMITS, window=1.0, rpd=1)
    assert served(quota, "priority", 0.0) == "priority"
    assert quota.admit("priority", 5.0, NOON_UTC).limit == "day"


@pytest.mark.parametrize(
    ("body", "tier"),
    [
        ({}, "standard"),
        ({"serviceTier": "priority"}, "priority"),
        ({"serviceTier": "PRIORITY"}, "priority"),
        ({"serviceTier": "SERVICE_TIER_FLEX"}, "flex"),
        ({"service_tier": "flex"}, "flex"),
        ({"serviceTier": "unspecified"}, "standard"),
        ({"serviceTier": "standard"}, "standard"),
    ],
)
def test_a_request_names_its_tier_as_the_sdk_or_the_api_spells_it(body: dict[str, str], tier: str) -> None:
    """Absent or unspecified is standard; either case, with or without the enum's prefix."""
    assert requested_tier(body) == tier


def test_an_unknown_tier_is_a_bad_request() -> None:
    """A tier the API does not know is a 400 INVALID_ARGUMENT naming it."""
    with pytest.raises(BadRequest, match="gold"):
        requested_tier({"serviceTier": "gold"})


def test_a_pool_spec_takes_its_tier_limits_and_a_model_table() -> None:
    """NAME:RPM/PRIORITY/FLEX:KEYS gives the tiers; unset ones follow the standard limit; a
    model in the table has its own limits."""
    spec = parse_pool("proj:600/120/300:k1,k2")
    assert spec.limits("any") == TierLimits(600, 120, 300)
    assert parse_pool("proj:600:k1").limits("any") == TierLimits(600, 180, 600)
    pro = TierLimits(60, 12, 0)
    table = PoolSpec("p", 600, ("k",), models=(("gemini-3-pro-image-preview", pro),))
    assert table.limits("gemini-3-pro-image-preview") == pro and table.limits("other").rpm == 600
    for bad in ("proj:600/x:k", "proj:600/1/2/3:k", "proj:600/-1:k"):
        with pytest.raises(ValueError, match="proj"):
            parse_pool(bad)


def test_a_model_table_names_only_served_models() -> None:
    """A limit for a model the emulator does not serve is refused, as are negative tier limits."""
    with pytest.raises(ValueError, match="not among the models served"):
        EmulatorConfig(pools=(PoolSpec("p", 60, ("k",), models=(("nope", TierLimits(60, 1, 1)),)),))
    with pytest.raises(ValueError, match="tier limits"):
        EmulatorConfig(pools=(PoolSpec("p", 60, ("k",), priority_rpm=-1),))
    assert "gemini-3-pro-image-preview" in EmulatorConfig(pools=(PoolSpec("p", 60, ("k",)),)).models
