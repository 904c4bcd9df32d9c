"""Fallback routes end to end: the actors call the Gemini emulator through google-genai on a
"primary" route (pool a, 2 credits) until upstream's day quota for project a runs out, then on
the cheaper "fallback" route (pool b, 1 credit), which gives each of its tasks the difference
back in the append that records the success. The audit's per-route figures match."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
from typer.testing import CliRunner

from actors import factory
from actors.audit import audit
from actors.config import CreditsConfig, PoolConfig, ProviderConfig, RouteConfig, Secret
from emulator.server import running
from emulator.wire import EmulatorConfig, PoolSpec
from events.catalogue import (
    CreditsRefunded,
    KeyParked,
    KeyTokenGranted,
    TaskSucceeded,
    TaskUpstreamThrottled,
)
from serve_app.cli.main import app
from serve_app.runtime import resolve
from tests.actors.conftest import Cluster
from tests.helpers import eventually, make_config

KEY_A = "test-key-RoutePrimaryA-00000000000000001"
KEY_B = "test-key-RouteFallbackB-0000000000000002"
TASKS = 20
CHARGE = 2  # what each task is charged: the primary route's price
FALLBACK_PRICE = 1
DAY = 6  # upstream's calls a day for project a


@contextmanager
def route_cluster(store_url: str, data_dir: str, url: str) -> Iterator[Cluster]:
    """Pools a and b on the emulator, on the routes "primary" (a, price 2) and "fallback"
    (b, price 1), in that order; stopped on the way out."""
    pools = tuple(
        PoolConfig(name=name, rpm=600, keys=(Secret(key),), window_seconds=1.0)
        for name, key in (("a", KEY_A), ("b", KEY_B))
    )
    base = make_config(
        store_url,
        data_dir,
        slots=4,
        provider=ProviderConfig(name="gemini", base_url=url, timeout_seconds=10.0, image_size="512"),
        pool_configs=pools,
        credits=CreditsConfig(photography=CHARGE),
    )
    routes = (
        RouteConfig("primary", ("a",), price=CHARGE),
        RouteConfig("fallback", ("b",), price=FALLBACK_PRICE),
    )
    config = resolve(replace(base, routes=routes))
    try:
        yield Cluster(config, factory.start(config))
    finally:
        factory.stop(config)


def test_a_burst_falls_back_to_the_cheaper_route_when_the_primary_is_parked_for_the_day(
    ray_session: None, store_url: str, data_dir: str
) -> None:
    """20 tasks charged 2 each; project a takes 6 calls a day. Every task succeeds; pool a
    serves until upstream's day quota parks it, pool b (the fallback) after; each task.succeeded
    names its route, each fallback success is followed by its 1-credit route refund, the audit's
    per-route figures (and `genqueue audit`'s) are those, and upstream saw no call on project a
    after the park but the ones it answered 429 for the day."""
    started = time.monotonic()
    spec = EmulatorConfig(
        pools=(PoolSpec("a", 600, (KEY_A,), rpd=DAY), PoolSpec("b", 600, (KEY_B,))),
        window_seconds=1.0,
        latency=0.05,
        jitter=0.0,
        seed=5,
    )
    with running(spec) as url, route_cluster(store_url, data_dir, url) as cluster:
        ids = cluster.submit(TASKS, user=f"u{uuid.uuid4().hex[:6]}", price=CHARGE)
        eventually(
            lambda: cluster.succeeded() >= TASKS, timeout=30, interval=0.1, what="every task succeeded"
        )
        log = cluster.log()
        upstream: dict[str, Any] = httpx.get(f"{url}/stats", timeout=5).json()["projects"]
        cli = CliRunner().invoke(
            app,
            ["audit", "--redis-url", store_url, "--namespace", cluster.config.redis.namespace],
            env={"COLUMNS": "200"},
        )
    elapsed = time.monotonic() - started
    events = [s.event for s in log]
    successes = [e for e in events if isinstance(e, TaskSucceeded)]
    routes = {e.task_id: e.route for e in successes}
    on = {name: [e for e in successes if e.route == name] for name in ("primary", "fallback")}
    refunds = [(i, e) for i, e in enumerate(events) if isinstance(e, CreditsRefunded) and e.reason == "route"]
    parks = [(i, e) for i, e in enumerate(events) if isinstance(e, KeyParked)]
    grants = [(i, e.pool) for i, e in enumerate(events) if isinstance(e, KeyTokenGranted)]
    day_throttles = [e for e in events if isinstance(e, TaskUpstreamThrottled) and e.quota == "day"]
    report = audit(log)
    a, b = upstream["a"], upstream["b"]
    print(
        f"routes: {TASKS} tasks in {elapsed:.1f} s; primary {len(on['primary'])}, fallback "
        f"{len(on['fallback'])}; route refunds {len(refunds)} totalling "
        f"{sum(e.amount for _, e in refunds)}; project a accepted {a['accepted']}, 429 for the day "
        f"{a['throttled_day']} (of {a['throttled']} 429s), b accepted {b['accepted']}; audit {report.routes}"
    )
    # Every task succeeded once, on the route whose pool served it.
    assert sorted(routes) == sorted(ids) and len(successes) == TASKS
    assert all(e.route == {"a": "primary", "b": "fallback"}[e.pool] for e in successes)
    assert on["primary"] and on["fallback"]
    assert len(on["primary"]) == a["accepted"] == DAY and len(on["fallback"]) == b["accepted"]
    # Pool a was parked for the day once, and every grant on a came before it, every one on b after:
    # b served nothing while a still could.
    assert [p.pool for _, p in parks] == ["a"] and parks[0][1].until > time.time() + 60
    park_at = parks[0][0]
    assert all(i < park_at for i, pool in grants if pool == "a")
    assert all(i > park_at for i, pool in grants if pool == "b")
    assert all(e.pool == "a" for e in day_throttles) and day_throttles
    # Upstream saw on project a the 6 calls it served and the 429s for the day genqueue was told
    # of, nothing else: no call went to a once it was parked.
    assert a["throttled"] == a["throttled_day"] == len(day_throttles)
    assert b["throttled"] == 0
    # Each fallback success gave 1 credit back, in its own append: the entry after its success.
    assert sorted(e.task_id for _, e in refunds) == sorted(e.task_id for e in on["fallback"])
    assert all(e.amount == CHARGE - FALLBACK_PRICE for _, e in refunds)
    for i, refund in refunds:
        before = events[i - 1]
        assert isinstance(before, TaskSucceeded) and before.task_id == refund.task_id
    # The audit holds, and its per-route figures are these.
    fallback = len(on["fallback"])
    assert report.ok and report.route_refunded == fallback * (CHARGE - FALLBACK_PRICE)
    assert report.routes == {
        "fallback": {"tasks": fallback, "net_credits": fallback * FALLBACK_PRICE, "route_refunds": fallback},
        "primary": {"tasks": DAY, "net_credits": DAY * CHARGE, "route_refunds": 0},
    }
    assert cli.exit_code == 0, cli.output
    # `genqueue audit` prints them, a table row per route (a cell may wrap onto the next line).
    flat = " ".join(re.sub("[│┃─━┌┐└┘├┤┬┴┼╭╮╰╯]", " ", cli.output).split())
    assert f"route primary {DAY} succeeded, net {DAY * CHARGE} credits (0 refunded for the route)" in flat
    assert (
        f"route fallback {fallback} succeeded, net {fallback} credits ({fallback} refunded for the route)"
        in flat
    ), flat
