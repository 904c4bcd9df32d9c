"""A pool's status (its keys, parking and cooldown) is decided once, and the page's pool view, the
queue's dispatch decisions and the alerts all read it."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from actors.config import AlertsConfig, Config, PoolConfig, Secret
from actors.keypool.status import pool_status
from actors.queue.alerts import evaluate
from actors.queue.decide import pools_usable_at
from actors.queue.state import QueueState, apply
from events.catalogue import AlertRaised, Event, KeyCooledDown, KeyDisabled, KeyParked, StoredEvent
from events.memory_store import MemoryEventStore
from serve_app.http.pools import read_pools

HINTS = {"p#1": "aaaa", "p#2": "bbbb"}


def test_no_keys_comes_before_parked_before_cooling_before_ok() -> None:
    """The state names the most lasting reason a pool does not serve at once."""
    every = {"p#1": "aaaa", "p#2": "bbbb"}
    assert pool_status("p", HINTS, every, 50.0, 20.0, 10.0).state == "no keys"
    assert pool_status("p", HINTS, {"p#1": "aaaa"}, 50.0, 20.0, 10.0).state == "parked"
    assert pool_status("p", HINTS, {}, 5.0, 20.0, 10.0).state == "cooling"
    assert pool_status("p", HINTS, {}, 5.0, 5.0, 10.0).state == "ok"


def test_a_replaced_key_serves_again_and_other_pools_keys_do_not_count() -> None:
    """A key disabled under another hint was replaced in the config; a disabled key of another
    pool is not this pool's."""
    status = pool_status("p", HINTS, {"p#1": "zzzz", "p#2": "bbbb", "q#1": "aaaa"}, 0.0, 0.0, 10.0)
    assert status.healthy_keys == ("p#1",) and status.disabled_keys == ("p#2",)
    assert status.serving and status.usable_from == 10.0


def test_a_parked_pool_is_usable_when_its_quota_returns_and_a_cooling_one_at_once() -> None:
    """Parking delays when a pool may serve; a cooldown only when it may next grant; no keys: never."""
    parked = pool_status("p", HINTS, {}, 50.0, 60.0, 10.0)
    assert (parked.usable_from, parked.available_from, parked.serving) == (50.0, 60.0, False)
    cooling = pool_status("p", HINTS, {}, 0.0, 20.0, 10.0)
    assert (cooling.usable_from, cooling.available_from, cooling.serving) == (10.0, 20.0, True)
    keyless = pool_status("p", HINTS, dict(HINTS), 0.0, 0.0, 10.0)
    assert keyless.usable_from == keyless.available_from == math.inf and keyless.parked is False


@given(
    disabled=st.dictionaries(st.sampled_from(["p#1", "p#2"]), st.sampled_from(["aaaa", "bbbb", "zzzz"])),
    parked=st.sampled_from([0.0, 50.0]),
    cooldown=st.sampled_from([0.0, 20.0]),
)
def test_the_pool_view_the_dispatch_decision_and_the_alerts_agree(
    disabled: dict[str, str], parked: float, cooldown: float
) -> None:
    """For any disabled keys, parking and cooldown, the page, the queue and the alerts see the
    same disabled keys and the same parking."""
    now = 10.0
    config = replace(Config(), pools=(PoolConfig(name="p", rpm=60, keys=(Secret("k-one"), Secret("k-two"))),))
    hints = config.pools[0].key_hints
    hint_of = {"aaaa": hints["p#1"], "bbbb": hints["p#2"], "zzzz": "zzzz"}
    events: list[Event] = [
        KeyDisabled(pool="p", key_id=k, hint=hint_of[h], code=403, reason="r", at=1.0)
        for k, h in disabled.items()
    ]
    if parked:
        events.append(KeyParked(pool="p", key_id="p#1", until=parked, quota_id="", reason="", at=1.0))
    if cooldown:
        events.append(
            KeyCooledDown(pool="p", key_id="p#1", until=cooldown, retry_after=9.0, quota_id="", at=1.0)
        )

    async def view_of() -> tuple[str, tuple[str, ...], float]:
        store = MemoryEventStore()
        await store.append(events)
        (view,) = await read_pools(store, config, now)
        return view.state, view.disabled, view.available_from

    state, disabled_keys, available_from = asyncio.run(view_of())
    queue = QueueState()
    for i, event in enumerate(events):
        apply(queue, StoredEvent(f"1-{i + 1}", event))
    expected = pool_status("p", hints, queue.disabled, queue.parked.get("p", 0.0), cooldown, now)
    assert (state, disabled_keys, available_from) == (
        expected.state,
        expected.disabled_keys,
        expected.available_from,
    )
    assert pools_usable_at(queue, [("p", hints)], now) == expected.usable_from
    raised = {
        e.name for e in evaluate(queue, AlertsConfig(), now, [("p", hints)]) if isinstance(e, AlertRaised)
    }
    assert {n.removeprefix("key_disabled:") for n in raised if n.startswith("key_disabled:")} == set(
        disabled_keys
    )
    assert ("pool_parked:p" in raised) == (parked > now)
