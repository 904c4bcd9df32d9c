"""Priority lanes through the real actors: a paid task behind a free flood starts first."""

from __future__ import annotations

from collections.abc import Callable

from actors.config import LaneConfig
from events.catalogue import (
    YIELDED_QUOTA,
    StoredEvent,
    TaskDispatched,
    TaskStarted,
    TaskSubmitted,
    TaskUpstreamThrottled,
)
from tests.actors.conftest import Cluster
from tests.helpers import eventually

LANES = (LaneConfig("paid", 9.0), LaneConfig("free", 1.0, default=True))


def started_order(log: list[StoredEvent], ids: list[str]) -> list[str]:
    """The tasks of `ids` in the order their first call started."""
    wanted, order = set(ids), []
    for stored in log:
        event = stored.event
        if isinstance(event, TaskStarted) and event.task_id in wanted and event.task_id not in order:
            order.append(event.task_id)
    return order


def test_paid_tasks_behind_a_free_flood_start_before_it(make_cluster: Callable[..., Cluster]) -> None:
    """4 slots, 8 calls a second; 40 free tasks of 40 users, then 4 paid ones (weight 9 to 1).
    The free tasks given slots before the paid ones came may start first. Of the others,
    without lanes about 36 would start before the last paid task; with them at most 4 do (a
    slot given just before the queue read the paid tasks, and the free lane's share of the
    calls meanwhile, 1 in 10). Every task succeeds, and the events carry the lanes."""
    cluster = make_cluster(slots=4, workers=2, latency=0.2, pools=(("p1", 480, 1.0),), lanes=LANES)
    free = cluster.submit(40, user="f*", lane="free")
    eventually(lambda: cluster.succeeded() >= 1, timeout=60, what="a first free task")
    paid = cluster.submit(4, user="p*", lane="paid")
    eventually(lambda: cluster.ended([*free, *paid]), timeout=120, what="every task ended")
    log = cluster.log()
    order = started_order(log, [*free, *paid])
    assert len(order) == 44 and cluster.succeeded() == 44
    came = min(i for i, s in enumerate(log) if isinstance(s.event, TaskSubmitted) and s.event.task_id in paid)
    later = {s.event.task_id for s in log[came:] if isinstance(s.event, TaskDispatched)} & set(free)
    last_paid = max(order.index(t) for t in paid)
    ahead = [t for t in order[:last_paid] if t in later]
    print(f"free tasks given a slot after the paid came: {len(later)}; before the last paid: {len(ahead)}")
    assert len(later) >= 30  # the flood was still there when the paid tasks came
    assert len(ahead) <= 4
    # A slot taken back from a free holder waiting for its token (for the paid tasks) made no
    # call: that attempt has no task.started, and the task went back to its place.
    yielded = {
        (s.event.task_id, s.event.attempt)
        for s in log
        if isinstance(s.event, TaskUpstreamThrottled) and s.event.quota == YIELDED_QUOTA
    }
    began = {(s.event.task_id, s.event.attempt) for s in log if isinstance(s.event, TaskStarted)}
    print(f"slots taken back: {len(yielded)}")
    assert not yielded & began and {t for t, _ in yielded} <= set(free)
    lanes = {s.event.task_id: s.event.lane for s in log if isinstance(s.event, TaskDispatched)}
    assert {lanes[t] for t in paid} == {"paid"} and {lanes[t] for t in free} == {"free"}
