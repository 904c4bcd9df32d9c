"""A cold QueueActor or KeyPoolActor start over an archived log, on real actors: with no usable
snapshot it reads the archive's segments, then the stream, and comes back with the same state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import ray

from actors.archiving import archive_of
from actors.config import PoolConfig, Secret
from actors.keypool.state import KeyPoolState, apply, call_name, from_config
from events import log_reader
from events.archive import Archive, Sealed
from events.catalogue import KeyDisabled, KeyGrantsRedated, KeyLimitLearned, KeyParked
from events.redis_store import RedisEventStore
from serve_app.cli.ops import run_audit
from tests.actors.conftest import Cluster
from tests.archiving import archive_upto
from tests.helpers import append_to, eventually, with_store

# What `KeyPool.status` shows of the fold; each stays put for the test's length (an hour's window).
FOLDED = ("rate", "margin", "capacity", "available", "granted", "day_calls", "parked_until", "disabled")


def test_a_cold_queue_restart_replays_the_archive_then_the_stream(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Twelve tasks end, every event so far is archived and trimmed, every queue snapshot made
    unreadable: the restarted QueueActor replays from nothing and counts 12 succeeded; three
    more tasks then run; the audit over archive and stream holds."""
    cluster = make_cluster(slots=4, latency=0.05, pools=(("p1", 60000, 1.0),))
    ids = cluster.submit(12)
    eventually(lambda: cluster.ended(ids), timeout=60, what="12 tasks ended")
    archive = archive_of(cluster.config)

    def archive_all(store: RedisEventStore) -> Any:
        return archive_upto(store, archive, per_segment=25)

    sealed: list[Sealed] = with_store(cluster.config, archive_all)
    archived = sum(s.count for s in sealed)
    assert archived >= 12 * 4 and not [e for e in cluster.log() if e.event.type.startswith("task.")]
    cluster.corrupt_newest_snapshot("queue", every=True)

    queue = cluster.handles["queue"]
    cluster.crash(queue)
    status = ray.get(queue.status.remote(), timeout=30)
    assert status["recovery"]["snapshot"] == "0-0"
    assert status["recovery"]["replayed"] > archived
    assert (status["succeeded"], status["waiting"], status["running"]) == (12, 0, 0)

    late = cluster.submit(3)
    eventually(lambda: cluster.ended(late), timeout=60, what="tasks after the restart ended")
    redis = cluster.config.redis
    result = asyncio.run(run_audit(redis.url, redis.namespace, archive=archive))
    assert result.violations == [] and result.report.ended == {"succeeded": 15}


def test_a_cold_key_pool_restart_replays_the_archive_then_the_stream(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Eight tasks' grants, a learned limit and a parked pool are archived and trimmed; four more
    tasks' grants and a disabled key stay in the stream. The key pool's snapshots are dropped and
    it restarts: it replays every event once, archive then stream, and its pools stand as a fold
    of the whole log leaves them (rate, margin, grants in the window, calls today, parking,
    disabled keys); it holds every grant (an acquire for one answers its token). Three tasks run
    after, and the fold still matches."""
    hour = 3600.0
    keys = (Secret("k-p1-first-key-0001"), Secret("k-p1-second-key-0002"))
    pools = (
        PoolConfig(name="p1", rpm=600, keys=keys, window_seconds=hour),
        PoolConfig(name="p2", rpm=600, keys=(Secret("k-p2-only-key-0003"),), window_seconds=hour),
    )
    cluster = make_cluster(slots=4, latency=0.05, pool_configs=pools)
    archive = archive_of(cluster.config)
    ids = cluster.submit(8)
    eventually(lambda: cluster.ended(ids), timeout=60, what="8 tasks ended")
    # The key pool writes the calls' send times within its flush time of their ends: wait for
    # them, so that none lands in the stream after the archive.
    calls = {call_name(t, 1) for t in ids}

    def redated() -> bool:
        seen = {n for s in cluster.log() if isinstance(s.event, KeyGrantsRedated) for n in s.event.calls}
        return calls <= seen

    eventually(redated, timeout=30, what="the 8 calls' send times written")
    now = time.time()
    append_to(
        cluster.config,
        [
            KeyLimitLearned(
                pool="p1", rpm=500, previous=600, configured=600, margin=0.7, reason="429", at=now
            ),
            KeyParked(pool="p2", key_id="p2#1", until=now + 2 * hour, quota_id="rpd", reason="day", at=now),
        ],
    )

    def archive_all(store: RedisEventStore) -> Any:
        return archive_upto(store, archive, per_segment=25)

    sealed: list[Sealed] = with_store(cluster.config, archive_all)
    assert sum(s.count for s in sealed) > 8 * 4
    assert not [e for e in cluster.log() if e.event.type.startswith(("key.", "task."))]
    more = cluster.submit(4)
    eventually(lambda: cluster.ended(more), timeout=60, what="4 more tasks ended")
    hint = pools[0].key_hints["p1#2"]
    append_to(
        cluster.config, [KeyDisabled(pool="p1", key_id="p1#2", hint=hint, code=401, reason="x", at=now)]
    )

    keypool = cluster.handles["keypool"]
    drop_snapshots(cluster)
    before = len(whole_log(cluster, archive))
    cluster.crash(keypool)
    drop_snapshots(cluster)  # one the old process saved before it died
    recovery = ray.get(keypool.recovery.remote(), timeout=60)
    assert recovery["snapshot"] == "0-0"
    assert before <= recovery["replayed"] <= len(whole_log(cluster, archive))

    state, folded = fold(cluster, archive)
    assert shown(keypool) == folded
    assert folded["p1"]["rate"] == 500 and folded["p1"]["disabled"] == ["p1#2"]
    assert folded["p2"]["parked_until"] == now + 2 * hour
    granted = sum(p["granted"] for p in folded.values())
    assert granted == len(state.grants) == 12  # each grant folded once
    for (task_id, attempt), grant in state.grants.items():
        token = ray.get(keypool.acquire.remote(task_id, attempt), timeout=30)
        assert (token.pool, token.key_id, token.not_before) == (grant.pool, grant.key_id, grant.at)

    late = cluster.submit(3)
    eventually(lambda: cluster.ended(late), timeout=60, what="tasks after the restart ended")
    eventually(lambda: shown(keypool) == fold(cluster, archive)[1], timeout=30, what="the fold again")
    assert sum(p["granted"] for p in shown(keypool).values()) == 15
    redis = cluster.config.redis
    result = asyncio.run(run_audit(redis.url, redis.namespace, archive=archive))
    assert result.violations == [] and result.report.ended == {"succeeded": 15}


def drop_snapshots(cluster: Cluster) -> None:
    """Delete every snapshot of the key pool."""

    async def drop(store: RedisEventStore) -> None:
        await store._r.delete(store.keys.snapshots("keypool"))

    with_store(cluster.config, drop)


def whole_log(cluster: Cluster, archive: Archive) -> list[str]:
    """The ids of the whole log, archive then stream."""

    async def read(store: RedisEventStore) -> list[str]:
        return [str(i) async for page in log_reader.pages(store, archive) for i, _ in page]

    return with_store(cluster.config, read)


def fold(cluster: Cluster, archive: Archive) -> tuple[KeyPoolState, dict[str, dict[str, Any]]]:
    """The key pool state a fold of the whole log leaves, and what `KeyPool.status` would show of it."""

    async def read(store: RedisEventStore) -> KeyPoolState:
        state = from_config(cluster.config)
        async for page in log_reader.events(store, archive):
            for stored in page:
                apply(state, stored)
        return state

    state = with_store(cluster.config, read)
    now = time.time()
    return state, {name: project(pool.describe(now, 0)) for name, pool in state.pools.items()}


def shown(keypool: Any) -> dict[str, dict[str, Any]]:
    """What the running key pool shows of each pool's fold."""
    return {pool["name"]: project(pool) for pool in ray.get(keypool.status.remote(), timeout=30)}


def project(described: dict[str, Any]) -> dict[str, Any]:
    """The parts of a pool's status that the fold decides and the clock does not move."""
    return {key: described[key] for key in FOLDED}
