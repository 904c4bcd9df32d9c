"""The ETA under fallback routes: the forecast counts the pools of each kind's first route that
serves (neither parked for the day nor out of keys), as the key pool hands out tokens; a
fallback's pools count only once the route before it is parked or keyless, and a dearer one
not at all for a task charged the first route's price. Without routes nothing changes."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from typing import Any

import pytest

from actors import eta_range, forecast
from actors.config import Config, parse
from actors.serving_routes import serving_pools
from events.eta_reads import QueueReads, Recent
from serve_app.http.estimates import prior, snapshot, throughput
from serve_app.http.pools import pool_views

NOW = 1_000_000.0
WINDOW = 10.0
SLOTS = 40
POSITIONS = [0, 4, 5, 9, 10, 20, 30, 59, 60, 100, 150]
POOLS = {"a": 30, "b": 60, "c": 12}  # calls a minute: 5, 10 and 2 a window of 10 s
FREE_SLOTS = {"elapsed_sum": 1.0, "elapsed_count": 1.0}  # 1 s calls: 40 slots never bind


def config(pools: tuple[str, ...], routes: list[dict[str, Any]] | None = None, **sections: Any) -> Config:
    """Pools from POOLS with 10 s windows, 40 slots, 1 s offline calls, and `routes`."""
    raw: dict[str, Any] = {
        "pools": [
            {"name": n, "rpm": POOLS[n], "keys": [f"key-of-pool-{n}-0000000000"], "window_seconds": WINDOW}
            for n in pools
        ],
        "queue": {"slots": SLOTS},
        "provider": {"name": "offline", "latency_seconds": 1.0, "latency_jitter": 0.0},
        **sections,
    }
    if routes is not None:
        raw["routes"] = routes
    return parse(raw, {})


PRIMARY_FALLBACK = [{"name": "primary", "pools": ["a"]}, {"name": "fallback", "pools": ["b"]}]
ROUTED = config(("a", "b"), PRIMARY_FALLBACK)
EVERY = config(("a", "b"))


def parked(name: str) -> dict[str, dict[str, str]]:
    """Pool `name` parked for the day."""
    return {name: {"parked_until": str(NOW + 3600)}}


def keyless(cfg: Config, name: str) -> dict[str, dict[str, str]]:
    """Pool `name` with its only key rejected by upstream."""
    (pool,) = (p for p in cfg.pools if p.name == name)
    return {name: {f"disabled:{k}": json.dumps({"hint": h}) for k, h in pool.key_hints.items()}}


def built(cfg: Config, states: Mapping[str, dict[str, str]] | None = None) -> eta_range.Forecast:
    """The forecast a replica builds for an idle queue with 200 tasks waiting."""
    reads = QueueReads((), {}, 200, {}, dict(states or {}))
    snap = snapshot(cfg, reads, Recent([], [], {}), NOW)
    return eta_range.build(snap, max(POSITIONS) + 1, random.Random(0))


def etas(cfg: Config, states: Mapping[str, dict[str, str]] | None = None) -> list[float]:
    """The p50 ETA of each position in POSITIONS."""
    fc = built(cfg, states)
    out = []
    for position in POSITIONS:
        found = fc.range(position, NOW)
        assert found is not None
        out.append(found[0])
    return out


def test_without_routes_the_start_tables_are_those_of_every_pool() -> None:
    """No [[routes]]: the snapshot holds every pool's window as its view gives it, and the tables
    are the forecast's over them; one route of every pool changes nothing either."""
    views = pool_views(EVERY, {}, {}, NOW)
    fc = built(EVERY)
    assert fc.snapshot.pools == tuple(v.eta_window() for v in views)
    latency = prior(EVERY)
    table = forecast.start_table(NOW, SLOTS, 0, latency, fc.snapshot.pools, max(POSITIONS) + 1, busy=[])
    assert fc.p50 == table
    one = built(config(("a", "b"), [{"name": "all", "pools": ["a", "b"]}]))
    assert (one.p50, one.p90, one.snapshot.pools) == (fc.p50, fc.p90, fc.snapshot.pools)
    assert serving_pools(EVERY) is None


def test_with_routes_only_the_primarys_pools_count_while_it_serves() -> None:
    """Primary a (5 a window), fallback b (10): every position's ETA is a's alone, the same
    tables as a configuration of pool a only, and later than both pools' (15 a window)."""
    routed, alone, both = etas(ROUTED), etas(config(("a",))), etas(EVERY)
    assert routed == alone
    assert built(ROUTED).p50 == built(config(("a",))).p50
    assert all(r >= b for r, b in zip(routed, both, strict=True))
    assert routed[POSITIONS.index(5)] > both[POSITIONS.index(5)]  # a's 6th place is a window away
    assert routed[-1] > 2 * both[-1]
    assert serving_pools(
        ROUTED, {v.name: v.status for v in pool_views(ROUTED, {}, {}, NOW)}, NOW
    ) == frozenset({"a"})


@pytest.mark.parametrize("down", ["parked", "keyless"])
def test_a_primary_parked_or_out_of_keys_hands_the_eta_to_the_fallback(down: str) -> None:
    """a parked for the day, or its key rejected: the fallback b serves, and the ETA is b's
    alone (not an hour away, not both pools')."""
    states = parked("a") if down == "parked" else keyless(ROUTED, "a")
    assert etas(ROUTED, states) == etas(config(("b",)))
    assert etas(ROUTED, states)[-1] < 3600.0


def test_a_dearer_fallback_does_not_count_for_tasks_charged_the_primarys_price() -> None:
    """Primary a at 1 credit, fallback b at 3: a task charged 1 may not use b, so with a parked
    the ETA waits for a to come back (an hour), and b's places do not shorten it."""
    routes = [{"name": "cheap", "pools": ["a"], "price": 1}, {"name": "dear", "pools": ["b"], "price": 3}]
    dear = config(("a", "b"), routes)
    first = etas(dear, parked("a"))[0]
    assert first >= 3600.0
    # With credits off every route may be used: b serves.
    free = config(("a", "b"), routes, credits={"enabled": False})
    assert etas(free, parked("a")) == etas(config(("b",)))


def test_kinds_with_different_first_routes_count_together() -> None:
    """photography's chain is a then b, fitting's is c: one table over a and c (the union of
    the first serving routes), b not counted."""
    routes = [
        {"name": "photo", "pools": ["a"], "kinds": ["photography"]},
        {"name": "photo-spare", "pools": ["b"], "kinds": ["photography"]},
        {"name": "fit", "pools": ["c"], "kinds": ["fitting"]},
    ]
    cfg = config(("a", "b", "c"), routes)
    assert etas(cfg) == etas(config(("a", "c")))
    assert etas(cfg, parked("a")) == etas(config(("b", "c")))


def test_the_throughput_bound_counts_the_serving_routes_only() -> None:
    """The sustainable rate with routes is the primary's (from the configuration alone, and
    from the views), the fallback's once the primary is parked."""
    rate_a, rate_b = POOLS["a"] / 60, POOLS["b"] / 60
    assert throughput(EVERY, FREE_SLOTS)[0] == pytest.approx(rate_a + rate_b)
    assert throughput(ROUTED, FREE_SLOTS)[0] == pytest.approx(rate_a)
    views = pool_views(ROUTED, {}, {}, NOW)
    assert throughput(ROUTED, FREE_SLOTS, views)[0] == pytest.approx(rate_a)
    views = pool_views(ROUTED, {}, parked("a"), NOW)
    assert throughput(ROUTED, FREE_SLOTS, views)[0] == pytest.approx(rate_b)
    # Without routes a parked pool does not count either: unchanged.
    assert throughput(EVERY, FREE_SLOTS, pool_views(EVERY, {}, parked("a"), NOW))[0] == pytest.approx(rate_b)


def test_a_fallbacks_recent_grants_stay_out_of_the_table_while_the_primary_serves() -> None:
    """b granted 10 calls just now (it served while a was parked); a serves again: the table is
    a's alone, whatever b's window holds."""
    reads = QueueReads((), {}, 200, {"b": [(f"{i:032d}:1", NOW - 1 + i * 0.01) for i in range(10)]}, {})
    snap = snapshot(ROUTED, reads, Recent([], [], {}), NOW)
    fc = eta_range.build(snap, max(POSITIONS) + 1, random.Random(0))
    assert fc.p50 == built(config(("a",))).p50
    assert len(snap.pools[1].grants) == 10 and math.isinf(snap.pools[1].available_from)
