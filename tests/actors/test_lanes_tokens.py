"""Priority lanes at the KeyPoolActor on Ray and Valkey: tokens are shared among the lanes by
weight (`actors.keypool.line`), so paid attempts that join behind a line of free ones are
served first, and the free ones still all get theirs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import ray

from actors import factory
from actors.config import Config, LaneConfig
from events.catalogue import KeyTokenGranted
from serve_app.runtime import resolve
from tests.actors.conftest import Cluster
from tests.helpers import make_config


@pytest.fixture
def lanes_cluster(ray_session: None, store_url: str, data_dir: str) -> Iterator[Cluster]:
    """Lanes paid (weight 4) and free (1); one pool of 2 calls per 1 s window."""
    base = make_config(store_url, data_dir, pools=(("p1", 120, 1.0),))
    config: Config = resolve(replace(base, lanes=(LaneConfig("paid", 4.0), LaneConfig("free", 1.0))))
    try:
        yield Cluster(config, factory.start(config))
    finally:
        factory.stop(config)


def test_paid_attempts_behind_free_ones_get_the_next_tokens(lanes_cluster: Cluster) -> None:
    """Two free attempts spend the window; then 8 free and, behind them in task order, 4 paid
    attempts wait. The places free two at a time; of each pair paid takes at least the first
    (it has used no more of its share than free, and ties go to the heavier lane), so the
    first token goes to paid and all four paid attempts are served within the first 7 of the
    12 tokens (4 of the first 5 when free's earlier tokens still count); every free attempt
    gets a token too, in task order."""
    keypool = lanes_cluster.handles["keypool"]
    warm = [keypool.acquire.remote(f"warm-{n}", 1, float(n), lane="free") for n in range(2)]
    assert all(t.granted for t in ray.get(warm, timeout=30))
    free = [keypool.acquire.remote(f"free-{n}", 1, 10.0 + n, lane="free") for n in range(8)]
    paid = [keypool.acquire.remote(f"paid-{n}", 1, 100.0 + n, lane="paid") for n in range(4)]
    assert all(t.granted for t in ray.get(free + paid, timeout=120))
    granted = [
        s.event.task_id
        for s in lanes_cluster.log()
        if isinstance(s.event, KeyTokenGranted) and not s.event.task_id.startswith("warm")
    ]
    print("grant order:", " ".join(granted))
    assert sorted(granted) == sorted([*(f"free-{n}" for n in range(8)), *(f"paid-{n}" for n in range(4))])
    assert granted[0] == "paid-0"
    assert {f"paid-{n}" for n in range(4)} <= set(granted[:7])
    assert [t for t in granted if t.startswith("free")] == [f"free-{n}" for n in range(8)]
