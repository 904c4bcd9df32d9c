"""The worker's decisions: what one attempt's outcome means, as the events it appends (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from actors.config import Route
from actors.messages import YIELDED, AttemptSpec, CallFailure
from actors.providers.base import Failure, ProviderError
from events.catalogue import (
    RUNNING,
    YIELDED_QUOTA,
    CreditsRefunded,
    Event,
    TaskAttemptFailed,
    TaskExpired,
    TaskLateOutcomeIgnored,
    TaskStarted,
    TaskSucceeded,
    TaskUpstreamThrottled,
)

# Failures that are upstream's quota or key, not the task's: the key pool learns from them
# and the task keeps its place. The value is the event's `quota`.
QUOTA: dict[Failure, str] = {
    Failure.THROTTLED: "minute",
    Failure.QUOTA_DAY: "day",
    Failure.KEY_REJECTED: "key",
}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """The task's input images could not be read from the blob store (`error`: the exception's name)."""

    error: str


@dataclass(frozen=True, slots=True)
class NoPool:
    """The key pool refused a token: every pool is parked or out of keys."""

    reason: str


@dataclass(frozen=True, slots=True)
class Generated:
    """The call made an image, stored as blob `result`; the call started at `t0`, asked for
    service tier `asked_tier` (its pool's) and was served at `service_tier` ("": not told)."""

    pool: str
    result: str
    mime_type: str
    t0: float
    asked_tier: str = ""
    service_tier: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """The call ended with a sorted failure (an upstream timeout is a TRANSIENT one)."""

    pool: str
    key_id: str
    error: ProviderError
    t0: float


@dataclass(frozen=True, slots=True)
class Crashed:
    """The call, or storing its result, raised something unexpected (`error`: the exception's name)."""

    pool: str
    error: str
    t0: float


@dataclass(frozen=True, slots=True)
class Superseded:
    """The store's guard refused an `outcome` event: the attempt no longer holds the task.

    The task was cancelled, or its lease expired, meanwhile; a started call was stopped.
    """

    outcome: str


Ended = Unreadable | NoPool | Generated | Refused | Crashed | Superseded
Outcome = TaskSucceeded | TaskAttemptFailed | TaskUpstreamThrottled | TaskLateOutcomeIgnored


def is_stale(spec: AttemptSpec, view: dict[str, str] | None) -> bool:
    """Whether a resent attempt already ended: the task view no longer shows it running.

    Skipping it means a finished attempt never spends another rate-limit token.
    """
    return not view or view.get("status") != RUNNING or view.get("attempts") != str(spec.attempt)


def started(spec: AttemptSpec, pool: str, key_id: str, not_before: float, now: float) -> TaskStarted:
    """The attempt holds a token of `pool`; its call begins at `now`, or at `not_before` if later.

    A token granted ahead starts its call when its place frees, milliseconds from now.
    """
    begins = max(now, not_before)
    return TaskStarted(
        task_id=spec.task_id,
        attempt=spec.attempt,
        pool=pool,
        key_id=key_id,
        waited=max(0.0, begins - spec.submitted_at) if spec.submitted_at else 0.0,
        at=begins,
    )


def too_late(spec: AttemptSpec, starts: float) -> bool:
    """Whether a call starting at `starts` would start after the attempt's deadline."""
    return bool(spec.deadline) and starts >= spec.deadline


def expired(spec: AttemptSpec, now: float) -> list[Event]:
    """The end of a task whose deadline passed before its call could start, with its refund."""
    ended: list[Event] = [
        TaskExpired(
            task_id=spec.task_id, attempt=spec.attempt, deadline=spec.deadline, lane=spec.lane, at=now
        )
    ]
    if spec.price:
        ended.append(
            CreditsRefunded(
                user_id=spec.user_id, task_id=spec.task_id, amount=spec.price, reason="expired", at=now
            )
        )
    return ended


def report(ended: Ended) -> CallFailure | None:
    """What the key pool must learn before the outcome is written, if anything.

    A refusal for quota or key reasons changes the pool (cooldown, parking, a disabled key);
    it is reported first so the task's next token already respects it.
    """
    if not isinstance(ended, Refused) or ended.error.failure not in QUOTA:
        return None
    exc = ended.error
    return CallFailure(
        key_id=ended.key_id,
        failure=exc.failure,
        code=exc.code,
        retry_after=exc.retry_after,
        quota_id=exc.quota_id,
        quota_value=exc.quota_value,
        reason=exc.reason,
    )


def settled(spec: AttemptSpec, event: Outcome, route: Route | None) -> list[Event]:
    """The events that record the attempt's `event`, appended together: a success on a route
    cheaper than the task's charge also gives the difference back (reason "route")."""
    if not isinstance(event, TaskSucceeded) or route is None or spec.price <= route.price:
        return [event]
    refund = CreditsRefunded(
        user_id=spec.user_id,
        task_id=spec.task_id,
        amount=spec.price - route.price,
        reason="route",
        at=event.at,
    )
    return [event, refund]


def outcome(spec: AttemptSpec, ended: Ended, now: float, route: Route | None = None) -> Outcome:
    """The event that records how the attempt ended at `now`; a success names its `route`."""
    match ended:
        case Unreadable(error=error):
            return TaskAttemptFailed(
                task_id=spec.task_id,
                attempt=spec.attempt,
                error=f"input image unreadable: {error}",
                retryable=True,
                at=now,
            )
        case NoPool(reason=reason):
            return TaskUpstreamThrottled(
                task_id=spec.task_id,
                attempt=spec.attempt,
                pool="",
                key_id="",
                code=0,
                # Its slot taken back for another lane (`KeyPool.withdraw`), or no pool serves.
                quota=YIELDED_QUOTA if reason == YIELDED else "none",
                retry_after=0.0,
                order=spec.order,
                lane=spec.lane,
                reason=reason,
                at=now,
            )
        case Generated():
            return TaskSucceeded(
                task_id=spec.task_id,
                attempt=spec.attempt,
                result=ended.result,
                mime_type=ended.mime_type,
                elapsed=now - ended.t0,
                held=now - spec.dispatched_at if spec.dispatched_at else 0.0,
                kind=spec.kind,
                pool=ended.pool,
                service_tier=ended.service_tier,
                asked_tier=ended.asked_tier,
                route=route.name if route is not None else "",
                at=now,
            )
        case Refused(error=exc) if exc.failure in QUOTA:
            return TaskUpstreamThrottled(
                task_id=spec.task_id,
                attempt=spec.attempt,
                pool=ended.pool,
                key_id=ended.key_id,
                code=exc.code,
                quota=QUOTA[exc.failure],
                retry_after=exc.retry_after or 0.0,
                order=spec.order,
                lane=spec.lane,
                reason=exc.reason,
                at=now,
            )
        case Refused(error=exc):
            return TaskAttemptFailed(
                task_id=spec.task_id,
                attempt=spec.attempt,
                error=exc.reason,
                retryable=exc.retryable,
                pool=ended.pool,
                code=exc.code,
                elapsed=now - ended.t0,
                at=now,
            )
        case Crashed():
            # A bug or a broken blob must not leave the attempt hanging: another attempt may work.
            return TaskAttemptFailed(
                task_id=spec.task_id,
                attempt=spec.attempt,
                error=f"internal error: {ended.error}",
                retryable=True,
                pool=ended.pool,
                elapsed=now - ended.t0,
                at=now,
            )
        case Superseded(outcome=refused):
            return TaskLateOutcomeIgnored(task_id=spec.task_id, attempt=spec.attempt, outcome=refused, at=now)
        case _:
            assert_never(ended)
