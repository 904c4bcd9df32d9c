"""The worker's pure decisions: each way an attempt ends, and the event (and key-pool report) it makes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.messages import CallFailure
from actors.providers.base import Failure, ProviderError
from actors.worker.decide import (
    QUOTA,
    AttemptSpec,
    Crashed,
    Ended,
    Generated,
    NoPool,
    Refused,
    Superseded,
    Unreadable,
    is_stale,
    outcome,
    report,
    started,
)
from events.catalogue import (
    TaskAttemptFailed,
    TaskLateOutcomeIgnored,
    TaskSucceeded,
    TaskUpstreamThrottled,
)
from events.codec import decode, encode

SPEC = AttemptSpec(
    task_id="t1",
    attempt=2,
    kind="fitting",
    prompt="p",
    inputs={"person": "tasks/t1/person.png"},
    submitted_at=100.0,
    dispatched_at=104.0,
    order=7.5,
)
NOW = 110.0
T0 = 106.0

# Each Failure kind as a provider reports it, and what the attempt's event must say:
# (error, event type, fields the event must hold).
FAILURES: list[tuple[ProviderError, type, dict[str, Any]]] = [
    (
        ProviderError("503 UNAVAILABLE: overloaded", code=503, failure=Failure.TRANSIENT),
        TaskAttemptFailed,
        {
            "retryable": True,
            "code": 503,
            "pool": "p1",
            "elapsed": 4.0,
            "error": "503 UNAVAILABLE: overloaded",
        },
    ),
    (
        ProviderError("the upstream call timed out", failure=Failure.TRANSIENT),
        TaskAttemptFailed,
        {"retryable": True, "code": 0, "elapsed": 4.0},
    ),
    (
        ProviderError("200 without an image", code=200, failure=Failure.PERMANENT),
        TaskAttemptFailed,
        {"retryable": False, "code": 200},
    ),
    (
        ProviderError("404 NOT_FOUND: model m is not served", code=404, failure=Failure.MODEL_GONE),
        TaskAttemptFailed,
        {"retryable": False, "code": 404},
    ),
    (
        ProviderError(
            "429 per minute", code=429, failure=Failure.THROTTLED, retry_after=12.5, quota_id="rpm"
        ),
        TaskUpstreamThrottled,
        {"quota": "minute", "retry_after": 12.5, "code": 429, "key_id": "k1", "order": 7.5},
    ),
    (
        ProviderError("429 per day", code=429, failure=Failure.QUOTA_DAY, quota_id="rpd", quota_value=50),
        TaskUpstreamThrottled,
        {"quota": "day", "retry_after": 0.0, "pool": "p1"},
    ),
    (
        ProviderError("403 PERMISSION_DENIED: the key was rejected", code=403, failure=Failure.KEY_REJECTED),
        TaskUpstreamThrottled,
        {"quota": "key", "code": 403, "reason": "403 PERMISSION_DENIED: the key was rejected"},
    ),
]


def test_the_table_covers_every_failure_kind() -> None:
    """A new Failure kind cannot go untested: the table names each one."""
    assert {error.failure for error, _, _ in FAILURES} == set(Failure)


@pytest.mark.parametrize(("error", "kind", "fields"), FAILURES, ids=lambda v: getattr(v, "reason", ""))
def test_each_failure_kind_makes_its_event(error: ProviderError, kind: type, fields: dict[str, Any]) -> None:
    """A provider failure becomes the event its Failure kind calls for, with the call's figures."""
    event = outcome(SPEC, Refused("p1", "k1", error, T0), NOW)
    assert type(event) is kind
    assert (event.task_id, event.attempt, event.at) == ("t1", 2, NOW)
    assert {name: getattr(event, name) for name in fields} == fields


@pytest.mark.parametrize(("error", "kind", "fields"), FAILURES, ids=lambda v: getattr(v, "reason", ""))
def test_only_quota_and_key_failures_are_reported_to_the_key_pool(
    error: ProviderError, kind: type, fields: dict[str, Any]
) -> None:
    """The key pool hears of a refusal exactly when the task keeps its place, with upstream's figures."""
    failure = report(Refused("p1", "k1", error, T0))
    if kind is TaskUpstreamThrottled:
        assert failure == CallFailure(
            key_id="k1",
            failure=error.failure,
            code=error.code,
            retry_after=error.retry_after,
            quota_id=error.quota_id,
            quota_value=error.quota_value,
            reason=error.reason,
        )
    else:
        assert failure is None


@pytest.mark.parametrize(
    ("ended", "expected"),
    [
        (
            Generated("p1", "tasks/t1/result-2.png", "image/png", T0),
            TaskSucceeded(
                task_id="t1",
                attempt=2,
                result="tasks/t1/result-2.png",
                mime_type="image/png",
                elapsed=4.0,
                held=6.0,
                kind="fitting",
                pool="p1",
                at=NOW,
            ),
        ),
        (
            Crashed("p1", "KeyError", T0),
            TaskAttemptFailed(
                task_id="t1",
                attempt=2,
                error="internal error: KeyError",
                retryable=True,
                pool="p1",
                elapsed=4.0,
                at=NOW,
            ),
        ),
        (
            Unreadable("FileNotFoundError"),
            TaskAttemptFailed(
                task_id="t1",
                attempt=2,
                error="input image unreadable: FileNotFoundError",
                retryable=True,
                at=NOW,
            ),
        ),
        (
            NoPool("every pool is out of keys"),
            TaskUpstreamThrottled(
                task_id="t1",
                attempt=2,
                pool="",
                key_id="",
                code=0,
                quota="none",
                retry_after=0.0,
                order=7.5,
                reason="every pool is out of keys",
                at=NOW,
            ),
        ),
        (
            Superseded("task.started"),
            TaskLateOutcomeIgnored(task_id="t1", attempt=2, outcome="task.started", at=NOW),
        ),
    ],
    ids=["success", "crash", "unreadable input", "no pool", "cancelled meanwhile"],
)
def test_each_other_ending_makes_its_event(ended: Ended, expected: object) -> None:
    """Success, a crash, unreadable input, no pool and a superseded attempt each make one exact event."""
    assert outcome(SPEC, ended, NOW) == expected
    assert report(ended) is None


def test_a_success_without_a_dispatch_time_holds_nothing() -> None:
    """An attempt that does not know when it was dispatched reports `held` as 0 (unknown)."""
    spec = AttemptSpec(task_id="t1", attempt=1, kind="photography", prompt="p", inputs={})
    event = outcome(spec, Generated("p1", "r", "image/png", T0), NOW)
    assert isinstance(event, TaskSucceeded) and event.held == 0.0


@pytest.mark.parametrize(
    ("now", "not_before", "submitted_at", "at", "waited"),
    [
        (105.0, 0.0, 100.0, 105.0, 5.0),  # a token for now
        (105.0, 105.4, 100.0, 105.4, 5.4),  # a token granted ahead: the call begins when its place frees
        (105.0, 0.0, 0.0, 105.0, 0.0),  # submit time unknown: no wait reported
        (99.0, 0.0, 100.0, 99.0, 0.0),  # clocks apart: never a negative wait
    ],
)
def test_started_begins_when_the_token_allows(
    now: float, not_before: float, submitted_at: float, at: float, waited: float
) -> None:
    """The started event is dated when the call may begin, and counts the wait since submit."""
    spec = AttemptSpec(
        task_id="t1", attempt=1, kind="photography", prompt="p", inputs={}, submitted_at=submitted_at
    )
    event = started(spec, "p1", "k1", not_before, now)
    assert (event.pool, event.key_id, event.at, event.waited) == ("p1", "k1", at, pytest.approx(waited))


@pytest.mark.parametrize(
    ("view", "stale"),
    [
        (None, True),
        ({}, True),
        ({"status": "succeeded", "attempts": "2"}, True),
        ({"status": "running", "attempts": "3"}, True),
        ({"status": "running", "attempts": "2"}, False),
    ],
)
def test_a_resent_attempt_runs_only_while_the_task_runs_it(view: dict[str, str] | None, stale: bool) -> None:
    """A resent attempt is skipped unless the task view still shows that attempt running."""
    assert is_stale(SPEC, view) is stale


errors = st.builds(
    ProviderError,
    st.text(max_size=20),
    code=st.sampled_from([0, 400, 403, 404, 429, 500, 503]),
    failure=st.sampled_from(Failure),
    retry_after=st.none() | st.floats(0, 3600),
    quota_id=st.text(max_size=8),
    quota_value=st.none() | st.integers(0, 10_000),
)
times = st.floats(0, 2e9)
endings: st.SearchStrategy[Ended] = st.one_of(
    st.builds(Unreadable, st.text(max_size=20)),
    st.builds(NoPool, st.text(max_size=40)),
    st.builds(Generated, st.text(max_size=8), st.text(max_size=30), st.just("image/png"), times),
    st.builds(Refused, st.text(max_size=8), st.text(max_size=8), errors, times),
    st.builds(Crashed, st.text(max_size=8), st.text(max_size=20), times),
    st.builds(Superseded, st.sampled_from(["task.started", "task.succeeded", "task.attempt_failed"])),
)


@given(ended=endings, now=times, attempt=st.integers(1, 20), order=st.floats(0, 1e6))
def test_every_ending_is_one_storable_event_of_this_attempt(
    ended: Ended, now: float, attempt: int, order: float
) -> None:
    """Whatever happened, the event is the attempt's own, dated now, and survives the codec."""
    spec = AttemptSpec(task_id="t9", attempt=attempt, kind="photography", prompt="p", inputs={}, order=order)
    event = outcome(spec, ended, now)
    assert (event.task_id, event.attempt, event.at) == ("t9", attempt, now)
    assert decode(encode(event)) == event
    keeps_place = isinstance(ended, NoPool) or (isinstance(ended, Refused) and ended.error.failure in QUOTA)
    assert isinstance(event, TaskUpstreamThrottled) is keeps_place
    assert (report(ended) is not None) is (keeps_place and not isinstance(ended, NoPool))
    if isinstance(event, TaskAttemptFailed):
        # Only a sorted permanent failure (or a retired model) ends the task's retries.
        assert event.retryable is not (isinstance(ended, Refused) and not ended.error.retryable)
    if isinstance(event, TaskUpstreamThrottled):
        assert event.order == order
