"""The actors on a real local Ray and the embedded Valkey: order, slots, limits, leases, recovery."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import ray

from actors.audit import audit
from actors.config import KeyPoolConfig
from events.catalogue import (
    KeyGrantsRedated,
    KeyTokenGranted,
    StoredEvent,
    TaskDispatched,
    TaskLateOutcomeIgnored,
    TaskStarted,
    TaskSubmitted,
    stream_id_key,
)
from events.codec import encode
from events.redis_store import RedisEventStore
from tests.actors.conftest import Cluster
from tests.helpers import eventually


def test_a_burst_runs_in_fifo_order_within_slots_and_the_rate_limit(
    make_cluster: Callable[..., Cluster],
) -> None:
    """20 tasks on 3 slots and a 5-per-second pool all succeed, start in order, and never overrun."""
    cluster = make_cluster(slots=3, latency=0.2, pools=(("p1", 300, 1.0),))
    ids = cluster.submit(20)
    eventually(lambda: cluster.ended(ids), timeout=60, what="all tasks ended")
    log = cluster.log()
    report = audit(log)
    assert report.ok and report.ended == {"succeeded": 20}
    assert report.max_running <= 3
    assert report.max_window_calls["p1"] <= 5
    first = [s.event.task_id for s in log if isinstance(s.event, TaskDispatched) and s.event.attempt == 1]
    assert first == ids
    started = [s.event for s in log if isinstance(s.event, TaskStarted)]
    assert {e.pool for e in started} == {"p1"} and len(started) == 20


def test_key_pool_hands_out_a_whole_window_at_once_then_waits(
    make_cluster: Callable[..., Cluster],
) -> None:
    """With slots to spare, a pool of 4 per 2 s starts 4 tasks at once and the next 4 a window later."""
    cluster = make_cluster(slots=10, latency=0.05, pools=(("p1", 120, 2.0),))
    ids = cluster.submit(8)
    eventually(lambda: cluster.ended(ids), timeout=60, what="all tasks ended")
    grants = sorted(s.event.at for s in cluster.log() if isinstance(s.event, KeyTokenGranted))
    assert len(grants) == 8
    assert grants[3] - grants[0] < 0.5
    assert grants[4] - grants[0] >= 2.0


def test_a_killed_queue_actor_comes_back_with_the_same_state(
    make_cluster: Callable[..., Cluster],
) -> None:
    """ray.kill with restart: the new QueueActor replays the log to the same waiting and running sets."""
    cluster = make_cluster(slots=2, latency=4.0, pools=(("p1", 6000, 1.0),))
    queue = cluster.handles["queue"]
    ids = cluster.submit(5)

    def status_when(ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        status: dict[str, Any] = ray.get(queue.status.remote(), timeout=30)
        return status if ok(status) else None

    before = eventually(
        lambda: status_when(lambda s: s["running"] == 2 and s["waiting"] == 3),
        what="two running, three waiting",
    )
    assert before is not None
    ray.kill(queue, no_restart=False)
    after = eventually(
        lambda: status_when(lambda s: s["pid"] != before["pid"]), what="a new QueueActor process"
    )
    assert after["waiting_order"] == before["waiting_order"]
    assert after["running_tasks"] == before["running_tasks"]
    eventually(lambda: cluster.ended(ids), timeout=90, what="all tasks ended after the restart")
    report = audit(cluster.log())
    assert report.ok and report.ended == {"succeeded": 5} and report.max_running <= 2


def test_expired_leases_retry_then_fail_and_late_outcomes_change_nothing(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Slow attempts' leases expire; after max_attempts the task fails once; late results are recorded."""
    cluster = make_cluster(
        slots=1, latency=1.5, lease_seconds=0.5, max_attempts=2, pools=(("p1", 6000, 1.0),)
    )
    (task,) = cluster.submit(1)
    eventually(lambda: cluster.ended([task]), timeout=30, what="the task ended")
    view = cluster.views([task])[task]
    assert view["status"] == "failed" and "gave up after 2 attempts" in view["error"]
    eventually(
        lambda: sum(isinstance(s.event, TaskLateOutcomeIgnored) for s in cluster.log()) >= 2,
        timeout=30,
        what="both late outcomes recorded",
    )
    report = audit(cluster.log())
    assert report.ok and report.ended == {"failed": 1}


def test_restart_loads_the_newest_readable_snapshot_and_replays_only_the_rest(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A restart replays only what follows the newest readable snapshot, down to a full replay."""
    cluster = make_cluster(slots=4, latency=0.05, snapshot_every=10, pools=(("p1", 60000, 1.0),))
    queue = cluster.handles["queue"]
    ids = cluster.submit(12)
    eventually(lambda: cluster.ended(ids), timeout=60, what="first batch ended")
    more = cluster.submit(12)
    eventually(lambda: cluster.ended(more), timeout=60, what="second batch ended")
    snapshots = [s for s in cluster.log() if s.event.type == "snapshot.taken"]
    assert len(snapshots) >= 2
    before = ray.get(queue.status.remote())

    def restart() -> dict[str, Any]:
        old_pid = ray.get(queue.status.remote())["pid"]
        ray.kill(queue, no_restart=False)

        def restarted() -> dict[str, Any] | None:
            status: dict[str, Any] = ray.get(queue.status.remote(), timeout=30)
            return status if status["pid"] != old_pid else None

        result = eventually(restarted, what="a new QueueActor process")
        assert result is not None
        return result

    after = restart()
    total = len(cluster.log())
    assert after["recovery"]["snapshot"] != "0-0"
    assert after["recovery"]["replayed"] < total
    assert (after["succeeded"], after["waiting"], after["running"]) == (24, 0, 0)
    assert after["succeeded"] == before["succeeded"]

    cluster.corrupt_newest_snapshot("queue")
    fallback = restart()
    assert fallback["recovery"]["snapshot"] == after["recovery"]["snapshot"]
    assert fallback["succeeded"] == 24
    cluster.corrupt_newest_snapshot("queue", every=True)
    full = restart()
    assert (full["recovery"]["snapshot"], full["recovery"]["replayed"]) == ("0-0", len(cluster.log()))
    assert full["succeeded"] == 24
    late = cluster.submit(3)
    eventually(lambda: cluster.ended(late), timeout=60, what="tasks after the restarts ended")
    report = audit(cluster.log())
    assert report.ok and report.ended == {"succeeded": 27}


def test_a_grant_counts_in_its_window_from_when_its_call_went_out(
    make_cluster: Callable[..., Cluster],
) -> None:
    """One call per 1 s window: a call that went out 0.6 s after its grant holds its place
    until a window (and the margin) after it went out, not after the grant."""
    margin = KeyPoolConfig().margin_seconds
    cluster = make_cluster(pools=(("p1", 60, 1.0),), keypool=KeyPoolConfig(margin_seconds=margin))
    keypool = cluster.handles["keypool"]
    assert ray.get(keypool.acquire.remote("first", 1, 1.0), timeout=30).granted

    def granted(task_id: str) -> float:
        return next(
            e.event.at
            for e in cluster.log()
            if isinstance(e.event, KeyTokenGranted) and e.event.task_id == task_id
        )

    first = granted("first")
    ray.get(keypool.sent.remote("first", 1, first + 0.6), timeout=30)
    assert ray.get(keypool.acquire.remote("second", 1, 2.0), timeout=30).granted
    assert granted("second") >= first + 0.6 + 1.0 + margin


def test_a_restarted_key_pool_counts_a_grant_from_when_its_call_went_out(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Two calls per 5 s window: the first call went out 0.5 s after its grant, written with the
    second grant; after a KeyPool crash only the second (its send unknown) is dated at the
    start, and the third token comes a window (and the margin) after the first call went out."""
    margin = KeyPoolConfig().margin_seconds
    cluster = make_cluster(pools=(("p1", 24, 5.0),), keypool=KeyPoolConfig(margin_seconds=margin))
    keypool = cluster.handles["keypool"]

    def granted(task_id: str) -> float:
        return next(
            e.event.at
            for e in cluster.log()
            if isinstance(e.event, KeyTokenGranted) and e.event.task_id == task_id
        )

    assert ray.get(keypool.acquire.remote("first", 1, 1.0), timeout=30).granted
    went_out = granted("first") + 0.5
    ray.get(keypool.sent.remote("first", 1, went_out), timeout=30)
    assert ray.get(keypool.acquire.remote("second", 1, 2.0), timeout=30).granted
    redated = [e.event for e in cluster.log() if isinstance(e.event, KeyGrantsRedated)]
    assert [r.calls for r in redated] == [{"first:1": went_out}]
    cluster.crash(keypool)
    assert ray.get(keypool.recovery.remote(), timeout=30)["dated_at_start"] == 1
    assert ray.get(keypool.acquire.remote("third", 1, 3.0), timeout=30).granted
    assert granted("third") >= went_out + 5.0 + margin


def test_a_place_about_to_free_is_granted_ahead_for_a_call_that_waits_until_then(
    make_cluster: Callable[..., Cluster],
) -> None:
    """One call per 2 s window and a lead of 1 s: the second token comes before its place
    frees and names the time it frees (`not_before`), a window and the margin after the first;
    its grant is dated then. (The lead is long next to the window so that a loaded machine's
    late wake-up of the key pool, a few tenths of a second, still leaves the token early.)"""
    keypool_config = KeyPoolConfig(lead_seconds=1.0)
    cluster = make_cluster(pools=(("p1", 30, 2.0),), keypool=keypool_config)
    keypool = cluster.handles["keypool"]
    first = ray.get(keypool.acquire.remote("first", 1, 1.0), timeout=30)
    second = ray.get(keypool.acquire.remote("second", 1, 2.0), timeout=30)
    received = time.time()
    assert first.granted and second.granted
    assert second.not_before >= first.not_before + 2.0 + keypool_config.margin_seconds
    assert received < second.not_before - 0.1
    granted = {e.event.task_id: e.event.at for e in cluster.log() if isinstance(e.event, KeyTokenGranted)}
    assert granted["second"] == pytest.approx(second.not_before)


def test_an_attempt_that_cannot_reach_a_worker_fails_alone_and_the_queue_goes_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A task whose options nest too deep to hand to a worker fails once with its refund, while
    the tasks around it succeed, snapshots go on and no attempt is dispatched twice."""
    import asyncio

    from events.catalogue import CreditsCharged, CreditsGranted, SnapshotTaken, TaskSubmitted
    from events.redis_store import RedisEventStore

    cluster = make_cluster(slots=2, latency=0.05, snapshot_every=3, pools=(("p1", 6000, 1.0),))
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(900):
        inner["x"] = {}
        inner = inner["x"]
    before = cluster.submit(2)
    bad = TaskSubmitted(
        task_id=f"{time.time_ns():x}".ljust(32, "f")[:32],
        user_id="u",
        kind="photography",
        prompt="p",
        inputs={"person": "tasks/x/person.png"},
        options=deep,
        at=time.time(),
    )
    charge = CreditsCharged(user_id="u", task_id=bad.task_id, amount=1, at=time.time())

    async def append() -> None:
        store = RedisEventStore.from_url(cluster.config.redis.url, cluster.config.redis.namespace)
        try:
            await store.append([CreditsGranted(user_id="u", amount=1, at=time.time()), bad, charge])
        finally:
            await store.close()

    asyncio.run(append())
    after = cluster.submit(6)
    ids = [*before, bad.task_id, *after]
    eventually(lambda: cluster.ended(ids), timeout=60, what="every task ended")
    views = cluster.views(ids)
    assert views[bad.task_id]["status"] == "failed"
    assert "could not hand the attempt to a worker" in views[bad.task_id]["error"]
    assert views[bad.task_id]["refunded"] == "1"
    assert all(views[t]["status"] == "succeeded" for t in [*before, *after])
    log = cluster.log()
    report = audit(log)
    assert report.ok and report.dispatched_twice == []
    assert report.ended == {"succeeded": 8, "failed": 1}
    failed_at = next(i for i, s in enumerate(log) if s.event.type == "task.failed")

    def snapshot_after_failure() -> bool:
        return any(isinstance(s.event, SnapshotTaken) for s in cluster.log()[failed_at:])

    cluster.submit(3)  # events enough for the next snapshot to fall due
    eventually(snapshot_after_failure, timeout=30, what="a snapshot after the failed task")


def _batched_burst(cluster: Cluster, method: str) -> tuple[list[StoredEvent], int, dict[str, int]]:
    """120 tasks through `cluster` (40 slots, zero latency): the log, the number of rounds and the
    key pool's calls; asserts what both token paths share: every task succeeded, each worker got
    a round's attempts in one call of `method`, and the send times went in batches."""
    ids = cluster.submit(120)
    eventually(lambda: cluster.ended(ids), timeout=120, what="all tasks ended")
    log = cluster.log()
    assert audit(log).ended == {"succeeded": 120}
    # A round's dispatches are decided at one instant, so they share their `at`.
    rounds = len({s.event.at for s in log if isinstance(s.event, TaskDispatched)})
    keypool = ray.get(cluster.handles["keypool"].calls.remote(), timeout=30)
    workers = [ray.get(w.calls.remote(), timeout=30) for w in cluster.handles["workers"]]
    assert sum(w["attempts"] for w in workers) == 120
    assert sum(w[method] for w in workers) <= rounds * len(workers)
    assert keypool["sends"] == 120 and keypool["sent_many"] < 120
    return log, rounds, keypool


def test_a_round_costs_one_token_call_and_one_call_per_worker_not_three_calls_per_task(
    make_cluster: Callable[..., Cluster],
) -> None:
    """120 tasks on 40 slots with `tokens_per_round`: the QueueActor takes each round's tokens in
    one key-pool call and hands each worker its attempts of the round in one call; no worker
    asks for a token, each task's token is granted before its dispatch, and the calls' send
    times reach the key pool in batches."""
    keypool_config = KeyPoolConfig(tokens_per_round=True)
    cluster = make_cluster(slots=40, latency=0.0, pools=(("p1", 60_000, 60.0),), keypool=keypool_config)
    log, rounds, keypool = _batched_burst(cluster, "run_many")
    assert keypool.get("acquire", 0) == 0 and keypool.get("hand_many", 0) == 0
    assert keypool["grant_many"] <= rounds < 120
    granted = {s.event.task_id: i for i, s in enumerate(log) if isinstance(s.event, KeyTokenGranted)}
    dispatched = {s.event.task_id: i for i, s in enumerate(log) if isinstance(s.event, TaskDispatched)}
    assert granted.keys() == dispatched.keys() and all(granted[t] < dispatched[t] for t in granted)


def test_without_tokens_per_round_the_key_pool_hands_each_worker_a_rounds_attempts_in_one_call(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The default: 120 tasks on 40 slots, the QueueActor sends each worker's attempts of a round
    to the key pool in one `hand_many` call, and the key pool hands them on to the worker with
    their tokens in one `run_granted` call (the pool never binds, so each is granted whole); no
    worker asks for a token, and send times still go in batches."""
    cluster = make_cluster(slots=40, latency=0.0, pools=(("p1", 60_000, 60.0),))
    _, rounds, keypool = _batched_burst(cluster, "run_granted")
    assert keypool["asks"] == 120 and keypool.get("acquire", 0) == 0 and keypool.get("grant_many", 0) == 0
    assert keypool["hand_many"] <= rounds * len(cluster.handles["workers"]) < 120
    workers = [ray.get(w.calls.remote(), timeout=30) for w in cluster.handles["workers"]]
    assert sum(w.get("run_many", 0) for w in workers) == 0


def test_submits_that_come_while_the_queue_gathers_share_one_round(
    make_cluster: Callable[..., Cluster],
) -> None:
    """[queue] gather_ms: once a submit wakes the idle queue, the submits appended one by one
    within the gather go to the worker in the same round (one `run_granted` call carrying them,
    one dispatch instant), none dispatched before the gather has passed."""
    gather = 2.0
    cluster = make_cluster(slots=40, latency=0.0, pools=(("p1", 60_000, 60.0),), gather_ms=gather * 1000)
    (warm,) = cluster.submit(1)  # the queue's first round, so the stream is quiet after it
    eventually(lambda: cluster.ended([warm]), timeout=30, what="the first task ended")
    (worker,) = cluster.handles["workers"]
    before = ray.get(worker.calls.remote(), timeout=30)
    ids = [cluster.submit(1)[0] for _ in range(4)]  # four appends, each a separate wake-up
    eventually(lambda: cluster.ended(ids), timeout=60, what="the four tasks ended")
    after = ray.get(worker.calls.remote(), timeout=30)
    assert after["run_granted"] - before["run_granted"] == 1
    assert after["attempts"] - before["attempts"] == 4
    log = cluster.log()
    submitted = {s.event.task_id: s.event.at for s in log if isinstance(s.event, TaskSubmitted)}
    dispatched = {s.event.task_id: s.event.at for s in log if isinstance(s.event, TaskDispatched)}
    assert len({dispatched[t] for t in ids}) == 1
    assert dispatched[ids[0]] - submitted[ids[0]] >= gather * 0.9


def test_a_dispatch_its_guard_refuses_does_not_stop_the_queue_reading_the_stream(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A task written to the stream without its view (so its dispatch's guard always refuses) does
    not keep the QueueActor from applying the events after it: it catches up after a refusal."""
    cluster = make_cluster(slots=1, latency=0.0, pools=(("p1", 6000, 60.0),))

    async def raw(store: RedisEventStore) -> str:
        orphan = TaskSubmitted(
            task_id="0" * 32, user_id="u", kind="photography", prompt="p", inputs={}, at=time.time()
        )
        await store._r.xadd(store.keys.events, encode(orphan))
        return await store.last_id()

    cluster._run(raw)
    ids = cluster.submit(3)
    last = cluster.log()[-1].id
    queue = cluster.handles["queue"]
    eventually(
        lambda: stream_id_key(ray.get(queue.ping.remote(), timeout=30)) >= stream_id_key(last),
        timeout=60,
        what="the queue applied every event",
    )
    assert set(ray.get(queue.status.remote(), timeout=30)["waiting_order"]) >= {"0" * 32, *ids}
