"""The event catalogue: every event genqueue writes, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, get_args

# The key pool's and the ledger's events live in modules of their own; this is their catalogue too.
from events.intake_events import IntakePaused as IntakePaused
from events.intake_events import IntakeResumed as IntakeResumed
from events.key_events import KeyCooledDown as KeyCooledDown
from events.key_events import KeyDisabled as KeyDisabled
from events.key_events import KeyGrantsRedated as KeyGrantsRedated
from events.key_events import KeyLimitLearned as KeyLimitLearned
from events.key_events import KeyParked as KeyParked
from events.key_events import KeyTokenGranted as KeyTokenGranted
from events.ledger_events import CreditsCharged as CreditsCharged
from events.ledger_events import CreditsGranted as CreditsGranted
from events.ledger_events import CreditsRefunded as CreditsRefunded
from events.ledger_events import TokenCreated as TokenCreated
from events.ledger_events import TokenRevoked as TokenRevoked
from events.log_events import LogArchived as LogArchived
from events.webhook_events import WebhookAttempted as WebhookAttempted
from events.webhook_events import WebhookDelivered as WebhookDelivered
from events.webhook_events import WebhookFailed as WebhookFailed

# Statuses a task view can show.
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
EXPIRED = "expired"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})

KINDS = ("photography", "fitting")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSubmitted:
    """A task was accepted: from now on it ends exactly once."""

    type: ClassVar[str] = "task.submitted"
    version: ClassVar[int] = 1
    task_id: str
    user_id: str
    kind: str
    prompt: str
    inputs: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    digest: str = ""
    # Where to POST the task view when it ends ("": nowhere), and the token that submitted
    # it, whose signing secret signs that webhook.
    webhook_url: str = ""
    token_id: str = ""
    # The task's place in the queue: `fair_order(round, n)`; 0 (older events): `at`.
    order: float = 0.0
    # When the task stops being useful (epoch s; 0: never): not started upstream by then, it
    # ends `task.expired`, refunded, with no call made.
    deadline: float = 0.0
    max_price: int = 0  # the most credits the submit allowed for a fallback route (0: not given)
    lane: str = ""  # the priority lane it rides ("": the one lane of a queue without lanes)
    at: float

    @property
    def place(self) -> float:
        """The score that orders this task among the waiting ones."""
        return self.order or self.at


# The `quota` of a task.upstream_throttled that made no call: the QueueActor took its slot back
# for a priority lane below its share, and it went back to its place.
YIELDED_QUOTA = "lane"

# Fair order: waiting users take turns. A task's place is (round, n): its user's turn
# number and its arrival within that turn, packed exactly into one float (n < 2**20).
ROUND_SPAN = 2**20


def fair_order(round_: int, n: int) -> float:
    """The queue score of the n-th task of round `round_`."""
    return float(round_ * ROUND_SPAN + n % ROUND_SPAN)


def round_of(order: float) -> int:
    """The round a queue score belongs to."""
    return int(order) // ROUND_SPAN


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskDispatched:
    """The queue gave a slot to one attempt of a task, leased until `lease_deadline`."""

    type: ClassVar[str] = "task.dispatched"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    worker: int
    lease_deadline: float
    order: float = 0.0
    lane: str = ""  # its task's priority lane (the per-lane waiting sets)
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStarted:
    """A worker holds a rate-limit token for the attempt and calls the provider."""

    type: ClassVar[str] = "task.started"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    pool: str
    key_id: str
    waited: float = 0.0
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSucceeded:
    """The attempt produced an image, stored as blob `result`.

    `elapsed` is the upstream call; `held` the whole slot, from dispatch (0: unknown).
    """

    type: ClassVar[str] = "task.succeeded"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    result: str
    mime_type: str
    elapsed: float
    held: float = 0.0
    kind: str = ""
    pool: str = ""
    # The service tier upstream says served the call ("": not told); the pool asked for its own.
    service_tier: str = ""
    asked_tier: str = ""  # the tier the call asked for, its pool's ("": older events)
    route: str = ""  # the fallback route whose pool served the call ("": older events)
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskAttemptFailed:
    """The attempt ended without an image; the queue decides whether to retry."""

    type: ClassVar[str] = "task.attempt_failed"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    error: str
    retryable: bool
    pool: str = ""
    code: int = 0
    elapsed: float = 0.0
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskLeaseExpired:
    """The attempt's lease passed its deadline before any outcome arrived."""

    type: ClassVar[str] = "task.lease_expired"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRetryScheduled:
    """The task waits again, at its old place, until `not_before`."""

    type: ClassVar[str] = "task.retry_scheduled"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    not_before: float
    order: float
    lane: str = ""  # its task's priority lane (the per-lane waiting sets)
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFailed:
    """The task ended without an image."""

    type: ClassVar[str] = "task.failed"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    error: str
    kind: str = ""
    lane: str = ""  # its task's priority lane (the per-lane waiting sets)
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCancelled:
    """A waiting task was withdrawn before it ran."""

    type: ClassVar[str] = "task.cancelled"
    version: ClassVar[int] = 1
    task_id: str
    reason: str
    lane: str = ""  # its task's priority lane (the per-lane waiting sets)
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskExpired:
    """The task's deadline passed before any call of it started upstream: it ends here, and no
    call is made for it. Appended with its refund, by the QueueActor for a waiting task or by
    the worker for a dispatched one (`attempt` > 0) whose token did not come in time."""

    type: ClassVar[str] = "task.expired"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int = 0
    deadline: float
    lane: str = ""  # its task's priority lane (the per-lane waiting sets)
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskLateOutcomeIgnored:
    """An outcome of an attempt that no longer held the task's lease; it changed nothing."""

    type: ClassVar[str] = "task.late_outcome_ignored"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    outcome: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskUpstreamThrottled:
    """An attempt ended for a reason that is not the task's: upstream quota or key, or no pool.

    The attempt does not count against the task's retry budget and the task goes back to
    its old place (`order`) in the queue. `quota` is "minute" or "day" (a 429 for that
    quota), "key" (upstream rejected the key) or "none" (no pool could serve: all parked
    or out of keys); `retry_after` is upstream's own wait, 0 when it gave none.
    """

    type: ClassVar[str] = "task.upstream_throttled"
    version: ClassVar[int] = 1
    task_id: str
    attempt: int
    pool: str
    key_id: str
    code: int
    quota: str
    retry_after: float
    order: float
    reason: str
    lane: str = ""  # its task's priority lane (the per-lane waiting sets)
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotTaken:
    """An actor stored its state as it stood after stream id `covers`."""

    type: ClassVar[str] = "snapshot.taken"
    version: ClassVar[int] = 1
    actor: str
    covers: str
    bytes: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobsExpired:
    """A task's blobs (its input images and result) passed their retention and are deleted."""

    type: ClassVar[str] = "blobs.expired"
    version: ClassVar[int] = 1
    task_id: str
    refs: list[str]
    retention_seconds: float
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaised:
    """A rule's condition holds: `value` passed `threshold`."""

    type: ClassVar[str] = "alert.raised"
    version: ClassVar[int] = 1
    name: str
    value: float
    threshold: float
    detail: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertResolved:
    """A raised alert's condition cleared (past the hysteresis band)."""

    type: ClassVar[str] = "alert.resolved"
    version: ClassVar[int] = 1
    name: str
    value: float
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertNotified:
    """An alert's delivery to one `[alerts] webhooks` receiver ended: answered with a 2xx
    (`delivered`), or given up after `attempts`. `receiver` is the URL's scheme, host and
    port only: a chat webhook's path is its secret."""

    type: ClassVar[str] = "alert.notified"
    version: ClassVar[int] = 1
    name: str
    webhook_id: str
    receiver: str
    delivered: bool
    attempts: int
    code: int = 0
    error: str = ""
    at: float


TaskEvent = (
    TaskSubmitted
    | TaskDispatched
    | TaskStarted
    | TaskSucceeded
    | TaskAttemptFailed
    | TaskLeaseExpired
    | TaskRetryScheduled
    | TaskFailed
    | TaskCancelled
    | TaskExpired
    | TaskLateOutcomeIgnored
    | TaskUpstreamThrottled
)
KeyEvent = KeyCooledDown | KeyParked | KeyDisabled | KeyLimitLearned
CreditEvent = CreditsGranted | CreditsCharged | CreditsRefunded
TokenEvent = TokenCreated | TokenRevoked
WebhookEvent = WebhookAttempted | WebhookDelivered | WebhookFailed
IntakeEvent = IntakePaused | IntakeResumed
Event = (
    TaskEvent
    | KeyTokenGranted
    | KeyGrantsRedated
    | KeyEvent
    | SnapshotTaken
    | BlobsExpired
    | AlertRaised
    | AlertResolved
    | AlertNotified
    | CreditEvent
    | TokenEvent
    | WebhookEvent
    | IntakeEvent
    | LogArchived
)

EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in get_args(Event)}

# `metrics` reaches only `GET /metrics`, so a scraper holds no credential that can do more.
ROLES = ("user", "service", "admin", "metrics")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event with the stream id that orders it."""

    id: str
    event: Event


def stream_id_ms(stream_id: str) -> int:
    """The millisecond part of a Redis stream id."""
    return int(stream_id.split("-", 1)[0])


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A sort key for Redis stream ids."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
