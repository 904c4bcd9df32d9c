"""Service tiers end to end: the actors call the Gemini emulator through google-genai from a
priority pool that counts against its project's standard pool. Upstream serves the priority
calls over its priority limit at standard without an error; genqueue records the tier that
served each call, counts the downgrades, raises the alert, and never overruns the project's
standard limit with both pools' calls together."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from actors.audit import max_in_window
from actors.config import AlertsConfig, KeyPoolConfig, PoolConfig, ProviderConfig, Secret
from emulator.server import running
from emulator.wire import EmulatorConfig, PoolSpec
from events.catalogue import AlertRaised, KeyTokenGranted, TaskSucceeded
from tests.actors.conftest import Cluster
from tests.helpers import eventually
from tests.served import served

STANDARD_KEY = "test-key-TierStandard0000000000000000001"
PRIORITY_KEY = "test-key-TierPriority0000000000000000002"
WINDOW = 1.0
TASKS = 48
# Upstream: one project, 12 calls a window at standard, 4 of them at priority.
PROJECT = PoolSpec("project", 720, (STANDARD_KEY, PRIORITY_KEY), priority_rpm=240)


def test_a_priority_burst_over_its_limit_is_recorded_counted_and_alerted(
    make_cluster: Callable[..., Cluster],
) -> None:
    """48 tasks at once; the priority pool is configured at 8 calls a window, twice upstream's
    priority limit, and counts against the standard pool (12): every task succeeds, each
    task.succeeded names the tier that served it, the downgrades genqueue counts are the
    emulator's own, upstream never answered 429 (no window of the project held more than 12
    calls of both pools), and the downgrade alert is raised and listed in /v1/queue."""
    started = time.monotonic()
    spec = EmulatorConfig(pools=(PROJECT,), window_seconds=WINDOW, latency=0.05, jitter=0.01, seed=3)
    with running(spec) as url:
        fast = PoolConfig(
            name="fast",
            rpm=480,
            keys=(Secret(PRIORITY_KEY),),
            window_seconds=WINDOW,
            service_tier="priority",
            counts_against="std",
        )
        std = PoolConfig(name="std", rpm=720, keys=(Secret(STANDARD_KEY),), window_seconds=WINDOW)
        cluster = make_cluster(
            slots=16,
            provider=ProviderConfig(name="gemini", base_url=url, timeout_seconds=10.0, image_size="512"),
            pool_configs=(std, fast),
            keypool=KeyPoolConfig(margin_seconds=0.25),
            alerts=AlertsConfig(downgraded_above=0.2, error_window_seconds=60.0, error_min_calls=5),
        )
        ids = cluster.submit(TASKS)
        eventually(
            lambda: cluster.succeeded() >= TASKS, timeout=60, interval=0.2, what="every task succeeded"
        )
        eventually(
            lambda: any(isinstance(s.event, AlertRaised) for s in cluster.log()),
            timeout=20,
            what="the downgrade alert",
        )
        log = cluster.log()
        upstream = httpx.get(f"{url}/stats").json()["projects"]["project"]
        with served(cluster.config) as app:
            queue: dict[str, Any] = httpx.get(f"{app.url}/v1/queue", timeout=30).json()
        counts = cluster._run(lambda store: store.counts()).stats
    elapsed = time.monotonic() - started
    successes = [s.event for s in log if isinstance(s.event, TaskSucceeded)]
    by_pool: dict[str, list[str]] = {}
    for event in successes:
        by_pool.setdefault(event.pool, []).append(event.service_tier)
    downgrades = by_pool.get("fast", []).count("standard")
    grants = sorted(s.event.at for s in log if isinstance(s.event, KeyTokenGranted))
    alerts = [s.event for s in log if isinstance(s.event, AlertRaised)]
    print(
        f"service tiers: {TASKS} tasks in {elapsed:.1f} s; fast served "
        f"{by_pool.get('fast', []).count('priority')} priority / {downgrades} standard, std "
        f"{len(by_pool.get('std', []))}; downgraded: genqueue {counts.get('downgraded:fast')}, "
        f"emulator {upstream['downgraded']}; upstream 429s {upstream['throttled']}, most calls in a "
        f"window {upstream['max_window_calls']} (of 12), most grants in a window "
        f"{max_in_window(grants, WINDOW)}"
    )
    assert sorted(e.task_id for e in successes) == sorted(ids)
    assert set(by_pool) == {"fast", "std"} and set(by_pool["std"]) == {"standard"}
    assert set(by_pool["fast"]) == {"priority", "standard"}
    assert all(e.asked_tier == ("priority" if e.pool == "fast" else "standard") for e in successes)
    assert downgrades > 0 and counts.get("downgraded:fast") == downgrades == upstream["downgraded"]
    assert upstream["throttled"] == 0 and upstream["max_window_calls"] <= 12
    assert max_in_window(grants, WINDOW) <= 12
    assert [a.name for a in alerts] == ["downgraded:fast"]
    assert "downgraded:fast" in {a["name"] for a in queue["alerts"]}
    # /v1/queue shows the tiers, and counts the linked pair as the standard pool's budget alone.
    shown = {p["name"]: p for p in queue["pools"]}
    assert shown["fast"]["service_tier"] == "priority" and shown["fast"]["counts_against"] == ["std"]
    assert shown["std"]["service_tier"] == "standard" and shown["std"]["counts_against"] == []
    assert queue["throughput_bound_per_second"] <= 12 / WINDOW
