"""The log audit finds double endings, lost tasks and window overruns."""

from __future__ import annotations

from actors.audit import audit, max_in_window
from events.catalogue import Event, KeyTokenGranted, StoredEvent, TaskDispatched, TaskSucceeded
from tests.helpers import submitted


def stored(events: list[Event]) -> list[StoredEvent]:
    return [StoredEvent(f"{1000 + i}-0", e) for i, e in enumerate(events)]


def test_max_in_window_uses_half_open_windows() -> None:
    """Grants exactly one window apart fall in different windows."""
    assert max_in_window([0.0, 0.5, 1.0, 1.5], 1.0) == 2
    assert max_in_window([0.0, 0.0, 0.0], 1.0) == 3
    assert max_in_window([], 1.0) == 0


def test_a_clean_run_passes_and_a_lost_task_does_not() -> None:
    """A task that never ended is reported, and so is one that ended twice."""
    a, b = submitted(), submitted()
    ok = [
        a,
        TaskDispatched(task_id=a.task_id, attempt=1, worker=0, lease_deadline=9, at=1),
        TaskSucceeded(task_id=a.task_id, attempt=1, result="r", mime_type="image/png", elapsed=1, at=2),
    ]
    report = audit(stored(ok))
    assert report.ok and report.ended == {"succeeded": 1} and report.max_running == 1
    lost = audit(stored([*ok, b]))
    assert not lost.ok and lost.never_ended == [b.task_id]
    twice = audit(stored([*ok, ok[-1]]))
    assert not twice.ok and twice.ended_twice == [a.task_id]


def test_window_overrun_is_reported() -> None:
    """More grants in one window than the capacity they were granted under fails the audit."""
    grants: list[Event] = [
        KeyTokenGranted(
            pool="p", key_id="p#1", task_id=f"t{i}", attempt=1, capacity=2, window=1.0, at=0.1 * i
        )
        for i in range(3)
    ]
    report = audit(stored(grants))
    assert report.max_window_calls == {"p": 3} and not report.ok


def test_two_attempts_running_at_once_are_reported() -> None:
    """An attempt that starts while another attempt of the task still holds its lease is an overlap."""
    from events.catalogue import TaskLeaseExpired, TaskStarted

    a = submitted()
    t = a.task_id
    started = [TaskStarted(task_id=t, attempt=n, pool="p", key_id="p#1", at=float(n)) for n in (1, 2)]
    overlap = audit(stored([a, started[0], started[1]]))
    assert overlap.overlapping == [t] and not overlap.ok
    expired = audit(stored([a, started[0], TaskLeaseExpired(task_id=t, attempt=1, at=1.5), started[1]]))
    assert expired.overlapping == []


def test_each_grant_is_checked_against_the_capacity_in_force_when_it_was_made() -> None:
    from actors.audit import worst_window

    # Ten calls under a capacity of 10, then the pool learns 7 and waits for the window to pass.
    learned = [(i * 0.01, 10) for i in range(10)] + [(1.1 + i * 0.01, 7) for i in range(7)]
    assert worst_window(learned, 1.0) == (10, 10)
    # An eighth call inside the window after learning 7 is an overrun.
    overrun = [(i * 0.01, 10) for i in range(10)] + [(0.5, 7)]
    assert worst_window(overrun, 1.0) == (11, 7)
    assert worst_window([], 1.0) == (0, 0)


def test_an_attempt_dispatched_twice_is_reported() -> None:
    """Two task.dispatched for the same attempt of a task fail the audit and name the attempt."""
    a = submitted()
    dispatched = TaskDispatched(task_id=a.task_id, attempt=1, worker=0, lease_deadline=9, at=1)
    done = TaskSucceeded(task_id=a.task_id, attempt=1, result="r", mime_type="image/png", elapsed=1, at=2)
    assert audit(stored([a, dispatched, done])).dispatched_twice == []
    twice = audit(stored([a, dispatched, dispatched, done]))
    assert not twice.ok and twice.dispatched_twice == [f"{a.task_id}#1"]
