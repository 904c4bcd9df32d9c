"""Every upstream outcome class through the real path: QueueActor, KeyPoolActor, workers, the
google-genai client over HTTP, and the Gemini emulator enforcing per-project quotas."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from actors.config import PoolConfig, ProviderConfig, Secret
from emulator.server import running
from emulator.wire import EmulatorConfig, PoolSpec
from events.catalogue import (
    AlertRaised,
    KeyCooledDown,
    KeyDisabled,
    KeyLimitLearned,
    KeyParked,
    TaskFailed,
    TaskRetryScheduled,
    TaskUpstreamThrottled,
)
from tests.actors.conftest import Cluster
from tests.helpers import eventually

KEY_A = "test-key-EmulatorKeyA-000000000000000001"
KEY_B = "test-key-EmulatorKeyB-000000000000000002"
UNKNOWN = "test-key-NobodyKnowsThis-0000000000000003"
REVOKED = "test-key-RevokedKey-00000000000000000004"


@contextmanager
def emulator(*pools: PoolSpec, **kw: Any) -> Iterator[str]:
    """The emulator on a free port with a 1 s window and a short latency."""
    options: dict[str, Any] = {"window_seconds": 1.0, "latency": 0.05, "jitter": 0.0, **kw}
    with running(EmulatorConfig(pools=pools, **options)) as url:
        yield url


def gemini(url: str, model: str = "gemini-3.1-flash-image") -> ProviderConfig:
    return ProviderConfig(name="gemini", base_url=url, model=model, timeout_seconds=10.0, image_size="512")


def pool(name: str, rpm: int, *keys: str) -> PoolConfig:
    return PoolConfig(name=name, rpm=rpm, keys=tuple(Secret(k) for k in keys), window_seconds=1.0)


def stats(url: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{url}/stats", timeout=5).json()
    return result


def ended(cluster: Cluster, ids: list[str]) -> dict[str, dict[str, str]]:
    eventually(lambda: cluster.ended(ids), timeout=90, what="every task ended")
    return cluster.views(ids)


def test_per_minute_429s_cool_the_pool_learn_its_rate_and_fail_no_task(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Configured at 2x the real 10 calls/s with max_attempts 1: 429s happen, every task succeeds.

    With max_attempts 1 a single charged 429 would fail its task, so zero failures shows
    that a throttled attempt is not charged.
    """
    with emulator(PoolSpec("a", 600, (KEY_A,))) as url:
        cluster = make_cluster(
            slots=30, max_attempts=1, provider=gemini(url), pool_configs=(pool("a", 1200, KEY_A),)
        )
        ids = cluster.submit(60)
        views = ended(cluster, ids)
        assert Counter(v["status"] for v in views.values()) == {"succeeded": 60}
        log = [s.event for s in cluster.log()]
        throttles = [e for e in log if isinstance(e, TaskUpstreamThrottled)]
        cooled = [e for e in log if isinstance(e, KeyCooledDown)]
        learned = [e for e in log if isinstance(e, KeyLimitLearned)]
        assert throttles and all(t.code == 429 and t.quota == "minute" for t in throttles)
        assert cooled and all(0 < c.retry_after <= 1.0 for c in cooled)
        assert learned and learned[0].rpm == 600 and learned[0].previous == 1200
        assert not any(isinstance(e, TaskFailed) for e in log)
        s = stats(url)
        assert s["projects"]["a"]["max_window_calls"] <= 10
        assert s["projects"]["a"]["throttled"] == len(throttles)


def test_a_daily_quota_parks_one_pool_and_the_other_finishes_the_burst(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Pool a has 5 calls a day upstream: it is parked once and raises an alert; b does the rest."""
    with emulator(PoolSpec("a", 600, (KEY_A,), rpd=5), PoolSpec("b", 600, (KEY_B,))) as url:
        cluster = make_cluster(
            slots=10,
            max_attempts=1,
            provider=gemini(url),
            pool_configs=(pool("a", 600, KEY_A), pool("b", 600, KEY_B)),
        )
        ids = cluster.submit(40)
        views = ended(cluster, ids)
        assert Counter(v["status"] for v in views.values()) == {"succeeded": 40}
        log = [s.event for s in cluster.log()]
        parked = [e for e in log if isinstance(e, KeyParked)]
        assert len(parked) == 1 and parked[0].pool == "a" and parked[0].until > time.time() + 60
        day = [e for e in log if isinstance(e, TaskUpstreamThrottled) and e.quota == "day"]
        assert day and {e.pool for e in day} == {"a"}
        assert stats(url)["projects"]["a"]["accepted"] == 5
        eventually(
            lambda: any(
                isinstance(s.event, AlertRaised) and s.event.name == "pool_parked:a" for s in cluster.log()
            ),
            timeout=30,
            what="the pool_parked alert",
        )


def test_rejected_keys_are_disabled_alerted_and_never_written_down(
    make_cluster: Callable[..., Cluster],
) -> None:
    """An unknown key (400 API_KEY_INVALID) and a revoked one (403) are disabled; the good key
    does every task; no key appears anywhere in the event stream."""
    with emulator(PoolSpec("a", 6000, (KEY_A, REVOKED)), revoked=(REVOKED,)) as url:
        cluster = make_cluster(
            slots=4,
            max_attempts=1,
            provider=gemini(url),
            pool_configs=(pool("a", 6000, KEY_A, UNKNOWN, REVOKED),),
        )
        ids = cluster.submit(12)
        views = ended(cluster, ids)
        assert Counter(v["status"] for v in views.values()) == {"succeeded": 12}
        log = cluster.log()
        disabled = {e.key_id: e.code for s in log if isinstance(e := s.event, KeyDisabled)}
        assert disabled == {"a#2": 400, "a#3": 403}

        def alerts() -> set[str]:
            return {e.name for s in cluster.log() if isinstance(e := s.event, AlertRaised)}

        eventually(
            lambda: {"key_disabled:a#2", "key_disabled:a#3"} <= alerts(), timeout=30, what="key alerts"
        )
        raw = json.dumps([s.event.__class__.__name__ + repr(s.event) for s in cluster.log()])
        for secret in (KEY_A, UNKNOWN, REVOKED):
            assert secret not in raw and secret[:-4] not in raw


def test_a_retired_model_fails_its_tasks_with_a_clear_error_and_alerts(
    make_cluster: Callable[..., Cluster],
) -> None:
    """404 NOT_FOUND: the task fails at once (no retries) naming the model, and model_not_found is raised."""
    with emulator(PoolSpec("a", 6000, (KEY_A,))) as url:
        cluster = make_cluster(
            slots=2,
            max_attempts=3,
            provider=gemini(url, "gemini-1.0-pro-vision"),
            pool_configs=(pool("a", 6000, KEY_A),),
        )
        ids = cluster.submit(2)
        views = ended(cluster, ids)
        assert all(v["status"] == "failed" and "gemini-1.0-pro-vision" in v["error"] for v in views.values())
        assert not any(isinstance(s.event, TaskRetryScheduled) for s in cluster.log())
        eventually(
            lambda: any(
                isinstance(s.event, AlertRaised) and s.event.name == "model_not_found" for s in cluster.log()
            ),
            timeout=30,
            what="the model_not_found alert",
        )


def test_server_errors_are_retried_with_backoff_then_fail(make_cluster: Callable[..., Cluster]) -> None:
    """503 every time: each task is tried max_attempts times, with a backoff between, then fails."""
    with emulator(PoolSpec("a", 6000, (KEY_A,)), error_rate=1.0) as url:
        cluster = make_cluster(
            slots=2, max_attempts=3, provider=gemini(url), pool_configs=(pool("a", 6000, KEY_A),)
        )
        ids = cluster.submit(2)
        views = ended(cluster, ids)
        assert all(
            v["status"] == "failed" and "gave up after 3 attempts" in v["error"] for v in views.values()
        )
        retries = [e for s in cluster.log() if isinstance(e := s.event, TaskRetryScheduled)]
        assert len(retries) == 4 and all(r.not_before >= r.at for r in retries)
        assert stats(url)["projects"]["a"]["accepted"] == 6


def test_a_restarted_keypool_keeps_parking_disabled_keys_and_learned_rates(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Pool a is parked for the day, pool b lost a key and learned 600 RPM; a KeyPool crash
    and restart (Ray brings it back) keeps all three, read back from the pool read model."""
    import ray

    with emulator(PoolSpec("a", 6000, (KEY_A,), rpd=2), PoolSpec("b", 600, (KEY_B,))) as url:
        cluster = make_cluster(
            slots=20,
            max_attempts=1,
            provider=gemini(url),
            pool_configs=(pool("a", 6000, KEY_A), pool("b", 1200, KEY_B, UNKNOWN)),
        )
        ids = cluster.submit(40)
        views = ended(cluster, ids)
        assert Counter(v["status"] for v in views.values()) == {"succeeded": 40}
        keypool = cluster.handles["keypool"]

        def summary() -> dict[str, tuple[bool, list[str], int]]:
            status = ray.get(keypool.status.remote(), timeout=30)
            return {p["name"]: (p["parked_until"] > time.time(), p["disabled"], p["rate"]) for p in status}

        before = summary()
        assert before == {"a": (True, [], 6000), "b": (False, ["b#2"], 600)}
        cluster.crash(keypool)
        assert summary() == before
