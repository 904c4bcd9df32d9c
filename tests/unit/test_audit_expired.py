"""The log audit knows `task.expired`: one ending among the others, refunded in full, never after
a call of the task started, and only from an attempt the task had."""

from __future__ import annotations

from dataclasses import replace

from actors.audit import AuditReport, audit
from events.catalogue import (
    CreditsCharged,
    CreditsGranted,
    CreditsRefunded,
    Event,
    StoredEvent,
    TaskAttemptFailed,
    TaskDispatched,
    TaskExpired,
    TaskRetryScheduled,
    TaskStarted,
    TaskSucceeded,
)
from serve_app.cli.ops import AuditResult
from tests.helpers import submitted

PRICE = 2


def stored(events: list[Event]) -> list[StoredEvent]:
    return [StoredEvent(f"{1000 + i}-0", e) for i, e in enumerate(events)]


def charged(task_id: str, deadline: float = 5.0) -> list[Event]:
    """A task of u1 with a deadline, charged PRICE at submit."""
    return [
        CreditsGranted(user_id="u1", amount=10, by="test", at=0.5),
        replace(submitted(task_id), deadline=deadline),
        CreditsCharged(user_id="u1", task_id=task_id, amount=PRICE, at=1.0),
    ]


def expired(task_id: str, attempt: int = 0, refund: int = PRICE) -> list[Event]:
    """The task's expiry and, unless `refund` is 0, its refund, as one append writes them."""
    ended: list[Event] = [TaskExpired(task_id=task_id, attempt=attempt, deadline=5.0, at=6.0)]
    if refund:
        ended.append(CreditsRefunded(user_id="u1", task_id=task_id, amount=refund, reason="expired", at=6.0))
    return ended


def dispatched(task_id: str, attempt: int = 1) -> TaskDispatched:
    return TaskDispatched(task_id=task_id, attempt=attempt, worker=0, lease_deadline=99, at=2.0 + attempt)


def started(task_id: str, attempt: int = 1) -> TaskStarted:
    return TaskStarted(task_id=task_id, attempt=attempt, pool="p", key_id="p#1", at=2.5 + attempt)


def violations(report: AuditReport) -> list[str]:
    """What `genqueue audit` prints for `report`."""
    return AuditResult(report, events=0).violations


def test_a_waiting_task_that_expires_with_its_refund_passes() -> None:
    """Expired while waiting (attempt 0), refunded its whole charge: one ending, no violation."""
    report = audit(stored([*charged("a"), *expired("a")]))
    assert report.ok and report.ended == {"expired": 1} and report.never_ended == []
    assert report.credits == {"granted": 10, "charged": PRICE, "refunded": PRICE} and report.refunds == 1
    assert violations(report) == []


def test_a_dispatched_task_whose_worker_expires_it_passes_and_frees_its_slot() -> None:
    """The worker's expiry of the attempt it holds ends the task; nothing still runs."""
    report = audit(stored([*charged("a"), dispatched("a"), *expired("a", attempt=1)]))
    assert report.ok and report.ended == {"expired": 1} and report.still_live == 0
    assert report.max_running == 1


def test_an_expiry_after_a_retry_names_the_last_attempt() -> None:
    """Waiting again after a failed attempt, the task expires with attempt 1: it was dispatched."""
    retried: list[Event] = [
        dispatched("a"),
        TaskAttemptFailed(task_id="a", attempt=1, error="no pool", retryable=True, at=3.5),
        TaskRetryScheduled(task_id="a", attempt=1, not_before=4.0, order=1.0, at=3.5),
    ]
    assert audit(stored([*charged("a"), *retried, *expired("a", attempt=1)])).ok
    never = audit(stored([*charged("a"), *retried, *expired("a", attempt=2)]))
    assert not never.ok and never.expired_unknown_attempt == ["a#2"]
    assert never.ended == {"expired": 1} and never.refund_errors == []
    assert violations(never) == [
        "1 expiry event(s) of an attempt never dispatched or of a task not waiting: a#2"
    ]


def test_attempt_zero_of_a_task_holding_a_slot_is_reported() -> None:
    """Attempt 0 says the task was waiting; one that holds a slot was not."""
    report = audit(stored([*charged("a"), dispatched("a"), *expired("a", attempt=0)]))
    assert not report.ok and report.expired_unknown_attempt == ["a#0"]


def test_an_expired_task_must_be_refunded_exactly_its_charge() -> None:
    """No refund, a short one or two are each a credits violation naming the task."""
    none = audit(stored([*charged("a"), *expired("a", refund=0)]))
    assert not none.ok and none.refund_errors == ["a: expired without a refund"]
    short = audit(stored([*charged("a"), *expired("a", refund=1)]))
    assert short.refund_errors == ["a: refunded 1 of a charge of 2"]
    refund = expired("a")[1]
    twice = audit(stored([*charged("a"), *expired("a"), refund]))
    assert twice.refund_errors == ["a: refunded 2 times"]


def test_an_expired_task_that_also_succeeded_ended_twice() -> None:
    """An expiry counts as the task's one ending: a later success is a second."""
    done = TaskSucceeded(task_id="a", attempt=1, result="r", mime_type="image/png", elapsed=1, at=7)
    report = audit(stored([*charged("a"), dispatched("a"), *expired("a", attempt=1), done]))
    assert not report.ok and report.ended_twice == ["a"]


def test_an_expired_task_that_made_an_upstream_call_is_reported_by_name() -> None:
    """A `task.started` of an expired task, after its expiry or before it, is a violation of its
    own: the task was refunded for a call that was made."""
    late_start = audit(stored([*charged("a"), dispatched("a"), *expired("a", attempt=1), started("a")]))
    assert late_start.expired_after_start == ["a"] and not late_start.ok
    # Everything else about this log holds: only the new check catches it.
    assert late_start.ended == {"expired": 1} and late_start.refund_errors == []
    assert late_start.never_ended == late_start.ended_twice == late_start.overlapping == []
    assert violations(late_start) == ["1 task(s) expired after a call of theirs started: a"]
    early_start = audit(stored([*charged("b"), dispatched("b"), started("b"), *expired("b", attempt=1)]))
    assert early_start.expired_after_start == ["b"] and not early_start.ok
    # An earlier attempt's call counts too: no call of an expired task may have started.
    retried: list[Event] = [
        dispatched("c"),
        started("c"),
        TaskAttemptFailed(task_id="c", attempt=1, error="HTTP 500", retryable=True, at=3.8),
        TaskRetryScheduled(task_id="c", attempt=1, not_before=4.0, order=1.0, at=3.8),
    ]
    assert audit(stored([*charged("c"), *retried, *expired("c", attempt=1)])).expired_after_start == ["c"]
