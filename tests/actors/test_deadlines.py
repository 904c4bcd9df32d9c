"""Deadlines on the real path (QueueActor, KeyPoolActor, workers, Valkey): a task not started
upstream by its deadline ends expired, refunded in the same append, with no call made; those
that start do so before their deadline; tasks without one are untouched."""

from __future__ import annotations

from collections.abc import Callable

from actors.audit import audit
from events.catalogue import (
    CreditsRefunded,
    KeyTokenGranted,
    TaskExpired,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from tests.actors.conftest import Cluster
from tests.helpers import eventually


def test_tasks_past_their_deadline_expire_in_line_or_at_their_worker_and_make_no_call(
    make_cluster: Callable[..., Cluster],
) -> None:
    """4 slots, 2 calls a second, 0.2 s calls; 24 tasks with a 2 s deadline and 4 without. The
    first calls start at once; later ones wait for quota in their slots (their workers give up
    at the deadline: expired at attempt 1) or in line (the QueueActor expires them: attempt 0).
    Every expired task has no task.started and got its 3 credits back in the same append;
    every task.started of a task with a deadline is before it; the 4 without one succeed."""
    cluster = make_cluster(slots=4, workers=2, latency=0.2, pools=(("p1", 120, 1.0),))
    (warm,) = cluster.submit(1)
    eventually(lambda: cluster.ended([warm]), timeout=60, what="a first task through warm actors")
    ids = cluster.submit(24, deadline_seconds=2.0, price=3)
    plain = cluster.submit(4, user="v")
    eventually(lambda: cluster.ended([*ids, *plain]), timeout=60, what="every task ended")
    log = cluster.log()
    events = [s.event for s in log]
    deadline = {e.task_id: e.deadline for e in events if isinstance(e, TaskSubmitted)}
    started = {e.task_id: e.at for e in events if isinstance(e, TaskStarted)}
    expired = [e for e in events if isinstance(e, TaskExpired)]
    succeeded = {e.task_id for e in events if isinstance(e, TaskSucceeded)}
    in_line = [e for e in expired if e.attempt == 0]
    at_worker = [e for e in expired if e.attempt > 0]
    latest = max(started[t] - deadline[t] + 2 for t in started if t in ids)
    print(
        f"{len(succeeded & set(ids))} of 24 started in time; expired in line {len(in_line)}, "
        f"at their worker {len(at_worker)}; latest start {latest:.2f} s after submit"
    )
    assert set(plain) <= succeeded
    others = set(ids) - {e.task_id for e in expired} - succeeded
    assert not others, {t: [s.event for s in log if getattr(s.event, "task_id", "") == t] for t in others}
    # Which path each takes depends on this machine's speed; the next test pins the worker's.
    assert in_line or at_worker
    for task_id, at in started.items():
        if deadline.get(task_id):
            assert at < deadline[task_id]
    lead = cluster.config.keypool.lead_seconds
    for e in expired:
        # At its deadline, or earlier by at most the key pool's lead: a token granted ahead for a
        # place that frees at or after the deadline is not used, and the task ends at once.
        assert e.task_id not in started and e.at >= e.deadline - lead
        i = next(i for i, s in enumerate(log) if s.event is e)
        refund = log[i + 1].event
        assert isinstance(refund, CreditsRefunded) and (refund.task_id, refund.amount) == (e.task_id, 3)
    granted = {e.task_id for e in events if isinstance(e, KeyTokenGranted)}
    # A token that came too late goes unused; none was asked for in line.
    assert not granted & {e.task_id for e in in_line}
    views = cluster.views([e.task_id for e in expired])
    assert {v["status"] for v in views.values()} == {"expired"}
    assert all(v["refunded"] == "3" for v in views.values())
    report = audit(log)
    assert report.ok, report


def test_a_dispatched_task_whose_token_would_come_too_late_expires_at_its_worker(
    make_cluster: Callable[..., Cluster],
) -> None:
    """8 slots, one call per 10 s window, spent by a first task: 5 tasks with a 3 s deadline are
    dispatched at once and wait for a token; at the deadline their workers withdraw from the key
    pool's line and end them expired (attempt 1), refunded, with no grant and no call."""
    cluster = make_cluster(slots=8, workers=2, latency=0.1, pools=(("p1", 6, 10.0),))
    (warm,) = cluster.submit(1)
    eventually(lambda: cluster.ended([warm]), timeout=60, what="the first task, which spends the window")
    ids = cluster.submit(5, deadline_seconds=3.0, price=2)
    eventually(lambda: cluster.ended(ids), timeout=60, what="every task ended")
    events = [s.event for s in cluster.log()]
    expired = {e.task_id: e for e in events if isinstance(e, TaskExpired)}
    assert set(expired) == set(ids) and all(e.attempt == 1 for e in expired.values())
    assert not {e.task_id for e in events if isinstance(e, TaskStarted | KeyTokenGranted)} & set(ids)
    refunds = {e.task_id: e.amount for e in events if isinstance(e, CreditsRefunded)}
    assert refunds == dict.fromkeys(ids, 2)
    assert audit(cluster.log()).ok
