"""Service tiers in the configuration, the worker's outcome, the read model and the downgrade alert."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from actors.config import (
    PRIORITY,
    STANDARD_PRICE_PER_IMAGE,
    AlertsConfig,
    Config,
    ConfigError,
    PoolConfig,
    Secret,
    downgraded,
    parse,
    tier_price,
)
from actors.messages import AttemptSpec
from actors.queue.alerts import downgrade_checks, evaluate, tier_share
from actors.queue.state import apply, replay, restore, snapshot
from actors.worker.decide import Generated, outcome
from events.catalogue import AlertRaised, AlertResolved, Event, StoredEvent, TaskSucceeded
from events.keys import Keys
from events.projection import project
from events.read_ops import HIncr


def pools(*tables: dict[str, Any]) -> dict[str, Any]:
    """A raw config document with these [[pools]] tables (each given a key)."""
    return {"pools": [{"rpm": 60, "keys": [f"key-{i}"], **t} for i, t in enumerate(tables)]}


def test_a_pool_asks_for_standard_at_the_list_price_unless_told() -> None:
    """No tier: standard at the list price; a tier without a price takes the tier's; a price
    given is kept; counts_against is read."""
    config = parse(
        pools(
            {"name": "std"},
            {"name": "fast", "service_tier": "priority", "counts_against": "std"},
            {"name": "cheap", "service_tier": "flex", "price_per_image": 0.02},
        ),
        {},
    )
    std, fast, cheap = config.pools
    assert (std.service_tier, std.price_per_image) == ("standard", STANDARD_PRICE_PER_IMAGE)
    assert (fast.service_tier, fast.price_per_image, fast.counts_against) == (
        "priority",
        tier_price(PRIORITY),
        "std",
    )
    assert fast.price_per_image > std.price_per_image > tier_price("flex")
    assert (cheap.service_tier, cheap.price_per_image) == ("flex", 0.02)
    assert config.pool("fast") is fast


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        (
            ({"name": "a", "service_tier": "gold"},),
            "service_tier 'gold' is not one of standard, flex, priority",
        ),
        (({"name": "a", "price_per_image": -0.1},), "pools[0].price_per_image: a price in USD >= 0"),
        (({"name": "a", "price_per_image": "cheap"},), "pools[0].price_per_image: expected float"),
        (({"name": "a", "counts_against": "b"},), "counts_against 'b' names no pool (pools: a)"),
        (({"name": "a", "counts_against": "a"},), "counts_against names the pool itself"),
        (
            (
                {"name": "a", "counts_against": "b"},
                {"name": "b", "counts_against": "c"},
                {"name": "c", "counts_against": "a"},
            ),
            "counts_against makes a cycle (a -> b -> c -> a)",
        ),
    ],
)
def test_a_wrong_tier_price_or_counts_against_is_one_line_saying_what_to_do(
    tables: tuple[dict[str, Any], ...], fragment: str
) -> None:
    """Each mistake is a ConfigError of one line naming the pool and the way out."""
    with pytest.raises(ConfigError) as caught:
        parse(pools(*tables), {})
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_a_config_built_in_code_is_checked_too() -> None:
    """Config(pools=...) refuses a counts_against that names no pool, as the loader does."""
    with pytest.raises(ConfigError, match="names no pool"):
        Config(pools=(PoolConfig("a", 60, (Secret("k"),), counts_against="nowhere"),))


SPEC = AttemptSpec(task_id="t1", attempt=1, kind="photography", prompt="", inputs={}, dispatched_at=5.0)


def test_the_worker_records_the_tier_asked_and_the_tier_served() -> None:
    """A success carries both tiers; a priority call served at standard is a downgrade."""
    ended = Generated("fast", "blob", "image/png", 6.0, asked_tier=PRIORITY, service_tier="standard")
    event = outcome(SPEC, ended, 7.0)
    assert isinstance(event, TaskSucceeded)
    assert (event.asked_tier, event.service_tier, event.pool) == ("priority", "standard", "fast")
    assert downgraded(event.asked_tier, event.service_tier)
    assert not downgraded("priority", "priority") and not downgraded("priority", "")
    assert not downgraded("standard", "standard") and not downgraded("flex", "standard")


def _downgrade_counts(event: TaskSucceeded) -> dict[str, float]:
    return {
        op.field: op.amount
        for op in project(event, Keys("t"))
        if isinstance(op, HIncr) and op.field.startswith("downgraded:")
    }


def test_the_read_model_counts_downgrades_per_pool() -> None:
    """Only a priority call served at another tier counts, under its pool's name."""
    base = TaskSucceeded(
        task_id="t", attempt=1, result="r", mime_type="image/png", elapsed=1, pool="fast", at=1
    )
    assert _downgrade_counts(replace(base, asked_tier="priority", service_tier="standard")) == {
        "downgraded:fast": 1
    }
    for asked, served in (("priority", "priority"), ("priority", ""), ("standard", "standard"), ("", "")):
        assert _downgrade_counts(replace(base, asked_tier=asked, service_tier=served)) == {}


RULES = AlertsConfig(downgraded_above=0.2, error_window_seconds=10.0, error_min_calls=5, resolve_ratio=0.5)


def answered(pool: str, at: float, served: str, asked: str = PRIORITY) -> StoredEvent:
    """A task.succeeded of `pool` asked at `asked`, served at `served`."""
    return StoredEvent(
        f"{int(at * 1000)}-0",
        TaskSucceeded(
            task_id=f"t{at}",
            attempt=1,
            result="r",
            mime_type="image/png",
            elapsed=0.1,
            pool=pool,
            asked_tier=asked,
            service_tier=served,
            at=at,
        ),
    )


def alerts_of(events: list[Event]) -> list[tuple[type, str]]:
    return [(type(e), getattr(e, "name", "")) for e in events]


def test_the_downgrade_alert_needs_enough_calls_and_a_share_above_its_threshold() -> None:
    """4 calls all downgraded: too few; the 5th makes 5 of 5 (100 % > 20 %): raised once; calls
    that asked for standard do not count."""
    state = replay([answered("fast", 100.0 + i, "standard") for i in range(4)])
    replay([answered("slow", 100.0 + i, "standard", asked="standard") for i in range(9)], state)
    assert [c for c in downgrade_checks(state, RULES, 104.0) if c[1]] == []
    apply(state, answered("fast", 104.5, "standard"))
    (raised,) = evaluate(state, RULES, 105.0)
    assert isinstance(raised, AlertRaised) and raised.name == "downgraded:fast" and raised.value == 1.0
    assert "5 of its 5 calls" in raised.detail and "at standard" in raised.detail
    apply(state, StoredEvent("105000-1", raised))
    assert evaluate(state, RULES, 105.0) == []


def test_the_downgrade_alert_resolves_under_its_band_once_old_calls_leave_the_window() -> None:
    """Once the window holds only calls served at priority the alert resolves, once."""
    state = replay([answered("fast", 100.0 + i, "standard") for i in range(5)])
    (raised,) = evaluate(state, RULES, 105.0)
    apply(state, StoredEvent("105000-1", raised))
    replay([answered("fast", 121.0 + i, PRIORITY) for i in range(5)], state)
    assert tier_share(state, "fast", 126.0, 10.0) == (0.0, 0, 5)
    assert alerts_of(evaluate(state, RULES, 126.0)) == [(AlertResolved, "downgraded:fast")]


def test_the_downgrade_figures_survive_a_snapshot() -> None:
    """A QueueActor restarted from a snapshot has the same figures, so it raises the same alert."""
    state = replay([answered("fast", 100.0 + i, "standard") for i in range(5)])
    restored = restore(json.loads(json.dumps(snapshot(state))))
    assert restored.tiers == state.tiers
    assert alerts_of(evaluate(restored, RULES, 105.0)) == [(AlertRaised, "downgraded:fast")]
