"""`[[pools]] max_spend_per_day`: read, checked in one line that says what to do, turned into
the calls a Pacific day it pays for and handed to the key pool's state; and the alert rules
that resolve the key pool's `spend_cap:<pool>` alert and keep `pool_parked:<pool>` for day
quotas."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.config import AlertsConfig, ConfigError, PoolConfig, Secret, load, parse
from actors.keypool.state import from_config
from actors.queue.alerts import evaluate, spend_cap_alert
from actors.queue.state import QueueState, apply
from events.catalogue import AlertRaised, AlertResolved, KeyParked, StoredEvent
from tests.unit.test_config import EXAMPLE


def pool(**extra: object) -> dict[str, object]:
    """One pool table, with `extra` keys."""
    return {"name": "a", "rpm": 10, "keys": ["k"], **extra}


def test_the_cap_defaults_to_none_and_is_read_in_usd() -> None:
    """Left out: 0, no cap. Given: kept, and the key pool's day limit is what it pays for at
    the pool's price (an integer cap is a float like a price)."""
    plain = parse({"pools": [pool()]}, {}).pools[0]
    assert plain.max_spend_per_day == 0.0 and plain.day_cap_calls == 0
    config = parse(
        {
            "pools": [
                pool(max_spend_per_day=5),
                pool(name="b", service_tier="flex", max_spend_per_day=0.335, rpd=7),
                pool(name="c", price_per_image=0.1, max_spend_per_day=0.3),
            ]
        },
        {},
    )
    a, b, c = config.pools
    assert (a.max_spend_per_day, a.price_per_image, a.day_cap_calls) == (5.0, 0.067, 74)
    assert (b.price_per_image, b.day_cap_calls) == (0.0335, 10)
    assert c.day_cap_calls == 3
    assert (a.day_limit, b.day_limit, c.day_limit, plain.day_limit) == (74, 7, 3, 0)
    state = from_config(config)
    assert [(p.max_spend_per_day, p.price_per_image, p.day_limit) for p in state.pools.values()] == [
        (5.0, 0.067, 74),
        (0.335, 0.0335, 7),  # rpd 7 binds under the cap's 10
        (0.3, 0.1, 3),
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_spend_per_day": -1}, r"pool 'a': max_spend_per_day must be a USD amount >= 0 \(0: no cap\)"),
        ({"max_spend_per_day": "lots"}, r"pools\[0\]\.max_spend_per_day: expected float"),
        ({"max_spend_per_day": float("inf")}, "max_spend_per_day must be a USD amount"),
        ({"max_spend_per_day": float("nan")}, "max_spend_per_day must be a USD amount"),
        (
            {"max_spend_per_day": 0.05},
            r"pool 'a': max_spend_per_day \$0\.05 is below the price of one image \(\$0\.067\); "
            r"set it to at least 0\.067, or 0 for no cap",
        ),
        (
            {"service_tier": "priority", "max_spend_per_day": 0.1},
            r"below the price of one image \(\$0\.1206\); set it to at least 0\.1206",
        ),
        ({"max_spend_per_day_usd": 1}, "did you mean 'max_spend_per_day'"),
    ],
)
def test_a_bad_cap_is_refused_in_one_line_that_says_what_to_do(
    extra: dict[str, object], message: str
) -> None:
    """Negative, not a number, unbounded, below one image's price or misspelt: refused, naming the pool."""
    with pytest.raises(ConfigError, match=message) as refused:
        parse({"pools": [pool(**extra)]}, {})
    assert "\n" not in str(refused.value)


def test_a_cap_of_exactly_one_image_and_a_cap_on_free_images_are_accepted() -> None:
    """A cap equal to one image's price pays for one call; with free images (price 0) no cap
    can bind, so any cap is no limit."""
    one = parse({"pools": [pool(max_spend_per_day=0.067)]}, {}).pools[0]
    assert one.day_cap_calls == 1
    free = parse({"pools": [pool(price_per_image=0, max_spend_per_day=0.01)]}, {}).pools[0]
    assert free.day_cap_calls == 0
    built = PoolConfig(name="x", rpm=1, keys=(Secret("k"),), max_spend_per_day=1.0)
    assert built.day_cap_calls == 14
    with pytest.raises(ConfigError, match="below the price of one image"):
        PoolConfig(name="x", rpm=1, keys=(Secret("k"),), max_spend_per_day=0.01)


def test_the_example_file_documents_the_cap(tmp_path: Path) -> None:
    """genqueue.example.toml names max_spend_per_day, set to no cap, and loads."""
    text = EXAMPLE.read_text()
    assert "max_spend_per_day = 0.0" in text and "spend_cap:<pool>" in text
    env = {f"GEMINI_KEY_{p}{i}": f"key-{p}{i}-0123456789abcdef" for p in "ABC" for i in (1, 2)}
    assert all(p.max_spend_per_day == 0.0 for p in load(EXAMPLE, env).pools)


MIDNIGHT = 86_400.0
HINTS = ("a", {"a#1": "h1"})


def queue_state(*events: object) -> QueueState:
    """A queue state folded from `events`."""
    state = QueueState()
    for i, event in enumerate(events):
        apply(state, StoredEvent(f"1-{i + 1}", event))  # type: ignore[arg-type]
    return state


def test_a_spend_cap_park_alerts_as_spend_cap_not_pool_parked_and_resolves_once_unparked() -> None:
    """The key pool's park and alert, folded by the queue: while parked, no `pool_parked:a`;
    once the park ends (Pacific midnight), `spend_cap:a` is resolved. A day quota's park
    still raises `pool_parked:a`."""
    rules = AlertsConfig()
    park = KeyParked(pool="a", key_id="a#1", until=MIDNIGHT, quota_id="spend_cap", reason="r", at=100.0)
    alert = spend_cap_alert(park, 10, 0.067, 0.67)
    assert (alert.name, alert.value, alert.threshold) == ("spend_cap:a", 0.67, 0.67)
    assert "$0.67 of $0.67 today (10 calls at $0.067 an image)" in alert.detail
    assert "1970-01-02T00:00:00Z" in alert.detail and "max_spend_per_day" in alert.detail
    state = queue_state(park, alert)
    assert evaluate(state, rules, 200.0, [HINTS]) == []
    [resolved] = evaluate(state, rules, MIDNIGHT + 1.0, [HINTS])
    assert isinstance(resolved, AlertResolved) and resolved.name == "spend_cap:a"
    quota = queue_state(KeyParked(pool="a", key_id="a#1", until=MIDNIGHT, quota_id="q", reason="r", at=1.0))
    [raised] = evaluate(quota, rules, 200.0, [HINTS])
    assert isinstance(raised, AlertRaised) and raised.name == "pool_parked:a"


def test_a_pool_parked_alert_raised_before_the_spend_cap_alert_is_resolved() -> None:
    """Read in two batches (the park, an evaluation, then the alert): the `pool_parked:a` the
    first raised is resolved once `spend_cap:a` is there, and not raised again."""
    rules = AlertsConfig()
    park = KeyParked(pool="a", key_id="a#1", until=MIDNIGHT, quota_id="spend_cap", reason="r", at=100.0)
    state = queue_state(park)
    [early] = evaluate(state, rules, 100.5, [HINTS])
    assert early.name == "pool_parked:a"
    state = queue_state(park, early, spend_cap_alert(park, 10, 0.067, 0.67))
    [resolved] = evaluate(state, rules, 101.0, [HINTS])
    assert isinstance(resolved, AlertResolved) and resolved.name == "pool_parked:a"
