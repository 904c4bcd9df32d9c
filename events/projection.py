"""Read models: what each event writes beside itself, as plain operations.

The task view is a fold of `view_fields` over a task's events, and the same function
feeds the Redis hash, so the live read model and a replayed one cannot disagree.
"""

from __future__ import annotations

import json
from typing import assert_never

from events.catalogue import (
    CANCELLED,
    EXPIRED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    YIELDED_QUOTA,
    AlertNotified,
    AlertRaised,
    AlertResolved,
    BlobsExpired,
    CreditsCharged,
    CreditsGranted,
    CreditsRefunded,
    Event,
    IntakePaused,
    IntakeResumed,
    KeyCooledDown,
    KeyDisabled,
    KeyGrantsRedated,
    KeyLimitLearned,
    KeyParked,
    KeyTokenGranted,
    LogArchived,
    SnapshotTaken,
    TaskAttemptFailed,
    TaskCancelled,
    TaskDispatched,
    TaskExpired,
    TaskFailed,
    TaskLateOutcomeIgnored,
    TaskLeaseExpired,
    TaskRetryScheduled,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    TaskUpstreamThrottled,
    TokenCreated,
    TokenRevoked,
    WebhookAttempted,
    WebhookDelivered,
    WebhookFailed,
    round_of,
)
from events.daily_spend import spend_ops
from events.days import pacific_day
from events.key_models import pool_ops, token_ops
from events.keys import Keys
from events.ledger_ops import ledger_ops
from events.ops_models import STATUSES, index_ops, intake_ops
from events.public_view import ENDED, GRANTED, STARTED
from events.read_ops import (
    Expire,
    HDel,
    HIncr,
    HSet,
    LPush,
    Op,
    SAdd,
    Scalar,
    SRem,
    ZAdd,
    ZRem,
    ZTrim,
)

# How many failed tasks `GET /v1/queue` lists.
RECENT_FAILURES = 20

# Histogram bucket bounds (seconds) for queue wait and processing time.
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0)


def observe(key: str, value: float) -> list[Op]:
    """Record one observation in a histogram hash: its bucket, the sum and the count."""
    bucket = next((f"{b:g}" for b in BUCKETS if value <= b), "+Inf")
    return [HIncr(key, f"le:{bucket}", 1), HIncr(key, "sum", float(value)), HIncr(key, "count", 1)]


# How long an idempotency key names its first task.
IDEMPOTENCY_SECONDS = 24 * 3600


def view_fields(event: Event) -> dict[str, Scalar]:
    """The task-view fields an event sets; a task view is these folded in stream order."""
    match event:
        case TaskSubmitted():
            return {
                "task_id": event.task_id,
                "user_id": event.user_id,
                "kind": event.kind,
                "prompt": event.prompt,
                "status": QUEUED,
                "attempts": 0,
                "submitted_at": event.at,
                # The token's task list holds it: forgetting the task takes it out of that list too.
                **({"token_id": event.token_id} if event.token_id else {}),
                **({"deadline": event.deadline} if event.deadline else {}),
                **({"lane": event.lane} if event.lane else {}),
            }
        case TaskDispatched():
            return {"status": RUNNING, "attempts": event.attempt, "dispatched_at": event.at}
        case TaskStarted():
            return {
                "started_at": event.at,
                "pool": event.pool,
                "key_id": event.key_id,
                "call_attempt": event.attempt,
                "call": STARTED,
            }
        case KeyTokenGranted():
            return {"call_attempt": event.attempt, "call": GRANTED}
        case TaskSucceeded():
            return {
                "status": SUCCEEDED,
                "result": event.result,
                "mime_type": event.mime_type,
                "finished_at": event.at,
                "error": "",
            }
        case TaskAttemptFailed():
            return {"error": event.error, "call_attempt": event.attempt, "call": ENDED}
        case TaskLeaseExpired():
            return {
                "error": f"attempt {event.attempt}: lease expired",
                "call_attempt": event.attempt,
                "call": ENDED,
            }
        case TaskRetryScheduled():
            return {"status": QUEUED, "not_before": event.not_before}
        case TaskFailed():
            return {"status": FAILED, "error": event.error, "finished_at": event.at}
        case TaskCancelled():
            return {"status": CANCELLED, "error": event.reason, "finished_at": event.at}
        case TaskExpired():
            return {"status": EXPIRED, "error": "deadline passed before it started", "finished_at": event.at}
        case TaskUpstreamThrottled():
            return {"status": QUEUED, "throttled_at": event.at, "throttle_reason": event.reason}
        case CreditsCharged():
            return {"price": event.amount}
        case CreditsRefunded():
            return {"refunded": event.amount}
        case BlobsExpired():
            return {"blobs_expired_at": event.at}
        case (
            CreditsGranted()
            | TokenCreated()
            | TokenRevoked()
            | TaskLateOutcomeIgnored()
            | KeyGrantsRedated()
            | KeyCooledDown()
            | KeyParked()
            | KeyDisabled()
            | KeyLimitLearned()
            | SnapshotTaken()
            | AlertRaised()
            | AlertResolved()
            | AlertNotified()
            | WebhookAttempted()
            | WebhookDelivered()
            | WebhookFailed()
            | IntakePaused()
            | IntakeResumed()
            | LogArchived()
        ):
            return {}
        case _:
            assert_never(event)


def view_guarded(event: Event, keys: Keys) -> tuple[str, frozenset[str]] | None:
    """For an event about a task other than its submit: the task's view key and the keys that
    the event writes only while that view exists (the view, its audit list, the status lists).

    A finished task's read models leave Redis once the archive answers for it
    (`events.redis_forget`); an event that comes after (a webhook's outcome, its blobs
    expiring, a late refund) must not bring back a stub of them. None for a task's submit,
    which makes its view, and for events of no task.
    """
    task_id = getattr(event, "task_id", "")
    if not task_id or isinstance(event, TaskSubmitted):
        return None
    view = keys.task(task_id)
    statuses = (keys.status_tasks(s) for s in STATUSES)
    return view, frozenset((view, keys.task_log(task_id), *statuses))


def project(event: Event, keys: Keys) -> list[Op]:
    """Every read-model write that goes into the same transaction as `event`."""
    ops: list[Op] = []
    if isinstance(event, AlertRaised):
        detail = {
            "name": event.name,
            "value": event.value,
            "threshold": event.threshold,
            "detail": event.detail,
        }
        return [HSet(keys.alerts, {event.name: json.dumps({**detail, "since": event.at})})]
    if isinstance(event, AlertResolved):
        return [HDel(keys.alerts, event.name)]
    if isinstance(event, SnapshotTaken):
        # Where each actor's newest snapshot stands: the archive keeps the stream behind all of them.
        return [HSet(keys.log, {f"snapshot:{event.actor}": event.covers})]
    if isinstance(event, LogArchived):
        return [
            HSet(keys.log, {"archived_to": event.last, "digest": event.digest, "segment": event.segment}),
            HIncr(keys.log, "segments", 1),
            HIncr(keys.log, "archived", event.count),
        ]
    if isinstance(event, KeyGrantsRedated | AlertNotified):
        return ops
    if isinstance(event, KeyCooledDown | KeyParked | KeyDisabled | KeyLimitLearned):
        return pool_ops(event, keys)
    if isinstance(event, TokenCreated | TokenRevoked):
        return token_ops(event, keys)
    if isinstance(event, IntakePaused | IntakeResumed):
        return intake_ops(event, keys)
    if isinstance(event, CreditsGranted):
        ops = ledger_ops(event, keys, event.amount, {"reason": event.reason, "by": event.by})
        if event.by == "config":  # the default grant: once per user
            ops.append(HSet(keys.user(event.user_id), {"welcomed": 1}))
        return ops
    fields = view_fields(event)
    if fields:
        # `events` counts the view's changes: the watch stream's message ids build on it.
        ops += [HSet(keys.task(event.task_id), fields), HIncr(keys.task(event.task_id), "events", 1)]
        # The task list's indexes (`events.ops_models`), from the same fields as the view.
        status = fields.get("status")
        ops += index_ops(event, None if status is None else str(status), keys)
    match event:
        case TaskSubmitted():
            if event.idempotency_key:
                idem = keys.idempotency(event.user_id, event.idempotency_key)
                ops += [
                    HSet(idem, {"task_id": event.task_id, "digest": event.digest}),
                    Expire(idem, IDEMPOTENCY_SECONDS),
                ]
            if event.order:
                ops.append(HSet(keys.user(event.user_id), {"last_round": round_of(event.order)}))
            ops += [
                ZAdd(keys.waiting, event.task_id, event.place),
                *_in_lane(event.lane, keys, event.task_id, event.place),
                HIncr(keys.stats, "submitted", 1),
                HIncr(keys.stats, f"submitted:{event.kind}", 1),
            ]
        case TaskDispatched():
            ops += [ZRem(keys.waiting, event.task_id), SAdd(keys.running, event.task_id)]
            ops += _in_lane(event.lane, keys, event.task_id)
            if event.order:
                ops.append(HSet(keys.stats, {"dispatched_round": round_of(event.order)}))
        case CreditsCharged():
            ops += ledger_ops(event, keys, -event.amount, {"task_id": event.task_id})
            ops += spend_ops(keys, event.user_id, event.at, event.amount)  # the UTC day's net spend
        case CreditsRefunded():
            ops += ledger_ops(event, keys, event.amount, {"task_id": event.task_id, "reason": event.reason})
            ops += spend_ops(keys, event.user_id, event.at, -event.amount)
        case TaskSucceeded():
            ops += [
                SRem(keys.running, event.task_id),
                SRem(keys.calls, event.task_id),
                HIncr(keys.stats, "succeeded", 1),
                HIncr(keys.stats, f"completed:{event.kind}:succeeded", 1),
                HIncr(keys.stats, f"upstream:{event.pool}:200", 1),
                HIncr(keys.stats, "elapsed_sum", float(event.elapsed)),
                HIncr(keys.stats, "elapsed_count", 1),
                *(
                    [HIncr(keys.stats, "held_sum", float(event.held)), HIncr(keys.stats, "held_count", 1)]
                    if event.held
                    else []
                ),
                *observe(keys.histogram("processing"), event.elapsed),
            ]
            if event.asked_tier == "priority" and event.service_tier not in ("", "priority"):
                ops.append(HIncr(keys.stats, f"downgraded:{event.pool}", 1))  # `actors.config.downgraded`
        case TaskAttemptFailed():
            ops += [
                SRem(keys.running, event.task_id),
                SRem(keys.calls, event.task_id),
                HIncr(keys.stats, "attempts_failed", 1),
                HIncr(keys.stats, f"upstream:{event.pool}:{event.code}", 1),
                *observe(keys.histogram("processing"), event.elapsed),
            ]
        case TaskLeaseExpired():
            ops += [
                SRem(keys.running, event.task_id),
                SRem(keys.calls, event.task_id),
                HIncr(keys.stats, "attempts_failed", 1),
            ]
        case TaskRetryScheduled():
            ops += [ZAdd(keys.waiting, event.task_id, event.order)]
            ops += _in_lane(event.lane, keys, event.task_id, event.order)
        case TaskFailed():
            failure = {"task_id": event.task_id, "kind": event.kind, "error": event.error, "at": event.at}
            ops += [
                SRem(keys.running, event.task_id),
                SRem(keys.calls, event.task_id),
                ZRem(keys.waiting, event.task_id),
                *_in_lane(event.lane, keys, event.task_id),
                HIncr(keys.stats, "failed", 1),
                HIncr(keys.stats, f"completed:{event.kind}:failed", 1),
                LPush(keys.failures, json.dumps(failure, separators=(",", ":")), RECENT_FAILURES),
            ]
        case TaskCancelled():
            ops += [ZRem(keys.waiting, event.task_id), HIncr(keys.stats, "cancelled", 1)]
            ops += _in_lane(event.lane, keys, event.task_id)
        case TaskExpired():
            ops += [
                SRem(keys.running, event.task_id),
                ZRem(keys.waiting, event.task_id),
                *_in_lane(event.lane, keys, event.task_id),
                HIncr(keys.stats, "expired", 1),
            ]
        case TaskLateOutcomeIgnored():
            ops += [HIncr(keys.stats, "late_outcomes", 1)]
        case TaskUpstreamThrottled():
            ops += [
                SRem(keys.running, event.task_id),
                SRem(keys.calls, event.task_id),
                ZAdd(keys.waiting, event.task_id, event.order),
                *_in_lane(event.lane, keys, event.task_id, event.order),
                # A slot given back to another lane (no call made) is no upstream throttle.
                HIncr(keys.stats, "yielded" if event.quota == YIELDED_QUOTA else "throttled", 1),
            ]
            if event.pool:
                ops += [
                    HIncr(keys.stats, f"upstream:{event.pool}:{event.code}", 1),
                    HIncr(keys.pool(event.pool), "throttled", 1),
                ]
        case KeyTokenGranted():
            grants = keys.grants(event.pool)
            ops += [
                HIncr(keys.stats, f"calls:{event.pool}", 1),
                HIncr(keys.pool(event.pool), f"day:{pacific_day(event.at)}", 1),
                ZTrim(grants, event.at - event.window),
                ZAdd(grants, f"{event.task_id}:{event.attempt}", event.at),
            ]
        case TaskStarted():
            ops += [SAdd(keys.calls, event.task_id), *observe(keys.histogram("queue_wait"), event.waited)]
        case WebhookAttempted():
            ops += [HIncr(keys.stats, "webhook_attempts", 1)]
        case WebhookDelivered():
            ops += [HIncr(keys.stats, "webhooks_delivered", 1)]
        case WebhookFailed():
            ops += [HIncr(keys.stats, "webhooks_failed", 1)]
        case (
            KeyGrantsRedated()
            | KeyCooledDown()
            | KeyParked()
            | KeyDisabled()
            | KeyLimitLearned()
            | CreditsGranted()
            | TokenCreated()
            | TokenRevoked()
            | BlobsExpired()
        ):
            pass
        case _:
            assert_never(event)
    return ops


def _in_lane(lane: str, keys: Keys, task_id: str, place: float | None = None) -> list[Op]:
    """The task added to (at `place`) or removed from its lane's waiting set; nothing without lanes."""
    if not lane:
        return []
    return [
        ZAdd(keys.lane_waiting(lane), task_id, place)
        if place is not None
        else ZRem(keys.lane_waiting(lane), task_id)
    ]


def fold_task_view(events: list[Event]) -> dict[str, str]:
    """A task view folded from its events, as the strings the Redis hash holds."""
    view: dict[str, str] = {}
    for event in events:
        fields = view_fields(event)
        if fields:
            view.update({k: str(v) for k, v in fields.items()})
            view["events"] = str(int(view.get("events", 0)) + 1)
    return view
