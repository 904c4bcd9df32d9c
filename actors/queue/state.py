"""The queue state as a pure fold over the event stream: order, slots, leases, pending decisions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, assert_never

from msgspec import structs
from sortedcontainers import SortedList

from actors.config.pools import PRIORITY, downgraded
from actors.queue.buckets import count_in_bucket
from actors.queue.entries import EndedAttempt as EndedAttempt
from actors.queue.entries import Lease as Lease
from actors.queue.entries import PendingWebhook as PendingWebhook
from actors.queue.entries import TaskEntry as TaskEntry
from events.catalogue import (
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
    StoredEvent,
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
)


@dataclass(slots=True)
class QueueState:
    """Everything the QueueActor knows; built only by `apply`."""

    tasks: dict[str, TaskEntry] = field(default_factory=dict)
    # Waiting tasks by place; a re-queued task goes back to its old place.
    queue: SortedList = field(default_factory=SortedList)
    not_before: dict[str, float] = field(default_factory=dict)
    running: dict[str, Lease] = field(default_factory=dict)
    to_decide: dict[str, EndedAttempt] = field(default_factory=dict)
    seq: int = 0
    last_id: str = "0-0"
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    late: int = 0
    # Upstream outcomes per 10 s bucket (bucket start -> [ok, errors]), the last OUTCOME_BUCKETS.
    outcomes: dict[int, list[int]] = field(default_factory=dict)
    alerts: dict[str, float] = field(default_factory=dict)
    throttled: int = 0
    # Pool name -> the time its daily quota comes back; key id -> the hint of the disabled key.
    parked: dict[str, float] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)
    # The last upstream 404 (model gone) and the last success, for the model alert.
    last_not_found: float = 0.0
    last_success: float = 0.0
    # Completion webhooks still to deliver, by task id.
    webhooks: dict[str, PendingWebhook] = field(default_factory=dict)
    expired: int = 0
    # Priority pools' answered calls per 10 s bucket (pool -> bucket start -> [calls, served at
    # another tier]), the last OUTCOME_BUCKETS: the `downgraded:<pool>` alert's figures.
    tiers: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    # (deadline, task id) of the tasks whose deadline still applies (none of their calls started).
    deadlines: SortedList = field(default_factory=SortedList)
    # The waiting places again, one list per lane (derived: rebuilt from `queue` at a restore).
    lanes: dict[str, SortedList] = field(default_factory=dict)

    def due(self, now: float) -> Iterator[str]:
        """The tasks whose deadline has passed at `now` and still applies, soonest first."""
        for deadline, task_id in self.deadlines:
            if deadline > now:
                return
            yield task_id

    def record_outcome(self, at: float, ok: bool) -> None:
        """Count one upstream call's outcome in its 10 s bucket, forgetting old buckets."""
        count_in_bucket(self.outcomes, at, 0 if ok else 1)

    def record_tier(self, pool: str, at: float, downgraded: bool) -> None:
        """Count one answered call of priority pool `pool` (and whether it was served at another
        tier) in its 10 s bucket, forgetting old buckets."""
        buckets = self.tiers.setdefault(pool, {})
        count_in_bucket(buckets, at, 0)
        if downgraded:
            count_in_bucket(buckets, at, 1)

    @property
    def waiting(self) -> int:
        """How many tasks wait for a slot."""
        return len(self.queue)

    def waiting_order(self) -> Iterator[str]:
        """Waiting task ids in queue order: by place (users take turns, FIFO within a user),
        re-queued tasks at their old place."""
        for _, _, task_id in self.queue:
            yield task_id

    def is_waiting(self, task_id: str) -> bool:
        """Whether the task waits for a slot."""
        entry = self.tasks.get(task_id)
        return entry is not None and entry.place in self.queue

    def running_per_user(self) -> dict[str, int]:
        """How many tasks of each user hold a slot."""
        return Counter(entry.user_id for entry in self._holders())

    def lane_used(self) -> dict[str, int]:
        """How many slots each lane's tasks hold."""
        return Counter(entry.lane for entry in self._holders())

    def _holders(self) -> Iterator[TaskEntry]:
        for task_id in self.running:
            if (entry := self.tasks.get(task_id)) is not None:
                yield entry

    def _enqueue(self, entry: TaskEntry) -> None:
        self.queue.add(entry.place)
        lane = self.lanes.get(entry.lane)
        if lane is None:
            lane = self.lanes[entry.lane] = SortedList()
        lane.add(entry.place)

    def _unqueue(self, task_id: str) -> None:
        entry = self.tasks.get(task_id)
        if entry is not None:
            self.queue.discard(entry.place)
            if (lane := self.lanes.get(entry.lane)) is not None:
                lane.discard(entry.place)
                if not lane:
                    del self.lanes[entry.lane]
        self.not_before.pop(task_id, None)

    def _end(self, task_id: str, at: float) -> None:
        entry = self.tasks.get(task_id)
        if entry is not None and entry.webhook_url:
            self.webhooks[task_id] = PendingWebhook(task_id, entry.webhook_url, entry.token_id, at, 0, at)
        if self.running.pop(task_id, None) is None:  # a task holding a slot is not waiting
            self._unqueue(task_id)
        self.to_decide.pop(task_id, None)
        self.tasks.pop(task_id, None)
        if entry is not None and entry.deadline:
            self.deadlines.discard((entry.deadline, task_id))

    def _holds(self, task_id: str, attempt: int) -> bool:
        lease = self.running.get(task_id)
        return lease is not None and lease.attempt == attempt


def apply(state: QueueState, stored: StoredEvent) -> QueueState:
    """Fold one event into the queue state; duplicates and stale outcomes change nothing."""
    state.last_id = stored.id
    _apply_event(state, stored.event)
    return state


def _apply_event(state: QueueState, event: Event) -> None:
    # The cases go by how often each type comes in a log, a task's own events first: each case
    # is a type check, on the fold's hottest path.
    match event:
        case TaskSubmitted():
            t = event.task_id
            if t in state.tasks:
                return
            state.seq += 1
            state.tasks[t] = TaskEntry(
                task_id=t,
                user_id=event.user_id,
                kind=event.kind,
                prompt=event.prompt,
                inputs=dict(event.inputs),
                options=dict(event.options),
                order=event.place,
                seq=state.seq,
                at=event.at,
                webhook_url=event.webhook_url,
                token_id=event.token_id,
                deadline=event.deadline,
                lane=event.lane,
            )
            state._enqueue(state.tasks[t])
            if event.deadline:
                state.deadlines.add((event.deadline, t))
        case CreditsCharged():
            charged = state.tasks.get(event.task_id)
            if charged is not None:
                state.tasks[event.task_id] = structs.replace(charged, price=charged.price + event.amount)
        case TaskDispatched():
            t = event.task_id
            entry = state.tasks.get(t)
            if entry is None or t in state.running:
                return
            state._unqueue(t)
            state.tasks[t] = structs.replace(entry, attempts=event.attempt)
            state.running[t] = Lease(event.attempt, event.worker, event.lease_deadline, event.at)
        case TaskStarted():
            t = event.task_id
            entry = state.tasks.get(t)
            if entry is not None and not entry.started:
                state.tasks[t] = structs.replace(entry, started=True)
                if entry.deadline:
                    state.deadlines.discard((entry.deadline, t))
        case TaskSucceeded():
            t = event.task_id
            state.record_outcome(event.at, ok=True)
            if event.asked_tier == PRIORITY:
                state.record_tier(event.pool, event.at, downgraded(event.asked_tier, event.service_tier))
            state.last_success = max(state.last_success, event.at)
            if state._holds(t, event.attempt):
                state._end(t, event.at)
                state.succeeded += 1
        case KeyTokenGranted() | KeyGrantsRedated() | CreditsGranted() | CreditsRefunded():
            pass
        case TaskAttemptFailed():
            t = event.task_id
            state.record_outcome(event.at, ok=False)
            if event.code == 404:
                state.last_not_found = max(state.last_not_found, event.at)
            if state._holds(t, event.attempt):
                del state.running[t]
                state.to_decide[t] = EndedAttempt(event.attempt, event.error, event.retryable)
        case TaskLeaseExpired():
            t = event.task_id
            if state._holds(t, event.attempt):
                del state.running[t]
                state.to_decide[t] = EndedAttempt(event.attempt, "lease expired", True)
        case TaskRetryScheduled():
            t = event.task_id
            entry = state.tasks.get(t)
            if entry is None or state.to_decide.pop(t, None) is None:
                return
            state._enqueue(entry)
            state.not_before[t] = event.not_before
        case TaskFailed():
            if event.task_id in state.tasks:
                state._end(event.task_id, event.at)
                state.failed += 1
        case TaskCancelled():
            t = event.task_id
            if t in state.tasks and t not in state.running:
                state._end(t, event.at)
                state.cancelled += 1
        case TaskExpired():
            # A waiting task (attempt 0 or its last attempt's count), or a dispatched one whose
            # worker found the deadline passed before its call (it holds that attempt).
            t = event.task_id
            entry = state.tasks.get(t)
            if (
                entry is not None
                and not entry.started
                and (t not in state.running or state._holds(t, event.attempt))
            ):
                state._end(t, event.at)
                state.expired += 1
        case TaskUpstreamThrottled():
            t = event.task_id
            entry = state.tasks.get(t)
            if entry is None or not state._holds(t, event.attempt):
                return
            del state.running[t]
            state.tasks[t] = structs.replace(entry, throttled=entry.throttled + 1)
            state.throttled += 1
            state._enqueue(entry)
        case TaskLateOutcomeIgnored():
            state.late += 1
        case WebhookAttempted():
            t = event.task_id
            pending = state.webhooks.get(t)
            if pending is not None and event.attempt > pending.attempts:
                state.webhooks[t] = structs.replace(pending, attempts=event.attempt, next_at=event.next_at)
        case WebhookDelivered() | WebhookFailed():
            state.webhooks.pop(event.task_id, None)
        case AlertRaised():
            state.alerts[event.name] = event.at
        case AlertResolved():
            state.alerts.pop(event.name, None)
        case KeyParked():
            state.parked[event.pool] = max(event.until, state.parked.get(event.pool, 0.0))
        case KeyDisabled():
            state.disabled[event.key_id] = event.hint
        case AlertNotified() | SnapshotTaken() | KeyCooledDown() | KeyLimitLearned() | LogArchived():
            pass
        case TokenCreated() | TokenRevoked() | BlobsExpired():
            pass
        case IntakePaused() | IntakeResumed():  # intake, not the queue: queued tasks drain
            pass
        case _:
            assert_never(event)


def replay(events: list[StoredEvent], state: QueueState | None = None) -> QueueState:
    """The queue state after folding `events` into `state` (or an empty one)."""
    current = state if state is not None else QueueState()
    for stored in events:
        apply(current, stored)
    return current


SNAPSHOT_VERSION = 3
# Older versions `restore` still reads: version 2 had no pending webhooks (none existed).
READABLE_VERSIONS = (2, 3)


def snapshot(state: QueueState) -> dict[str, Any]:
    """The state as plain JSON-able data (the inverse of `restore`)."""
    return {
        "v": SNAPSHOT_VERSION,
        "tasks": [structs.asdict(entry) for entry in state.tasks.values()],
        "queue": [list(place) for place in state.queue],
        "not_before": state.not_before,
        "running": {t: structs.asdict(lease) for t, lease in state.running.items()},
        "to_decide": {t: structs.asdict(ended) for t, ended in state.to_decide.items()},
        "seq": state.seq,
        "last_id": state.last_id,
        "counters": [state.succeeded, state.failed, state.cancelled, state.late, state.expired],
        "outcomes": {str(b): c for b, c in state.outcomes.items()},
        "alerts": state.alerts,
        "throttled": state.throttled,
        "parked": state.parked,
        "disabled": state.disabled,
        "model": [state.last_not_found, state.last_success],
        "webhooks": {t: structs.asdict(pending) for t, pending in state.webhooks.items()},
        "tiers": {pool: {str(b): c for b, c in buckets.items()} for pool, buckets in state.tiers.items()},
    }


def restore(data: dict[str, Any]) -> QueueState:
    """A state from `snapshot` data; raises ValueError on anything malformed."""
    try:
        if data["v"] not in READABLE_VERSIONS:
            raise ValueError(f"snapshot version {data['v']} is not one of {READABLE_VERSIONS}")
        state = QueueState(
            tasks={e["task_id"]: TaskEntry(**e) for e in data["tasks"]},
            queue=SortedList((float(o), int(s), str(t)) for o, s, t in data["queue"]),
            not_before={str(t): float(v) for t, v in data["not_before"].items()},
            running={t: Lease(**lease) for t, lease in data["running"].items()},
            to_decide={t: EndedAttempt(**ended) for t, ended in data["to_decide"].items()},
            seq=int(data["seq"]),
            last_id=str(data["last_id"]),
        )
        counters = [int(n) for n in data["counters"]]
        state.succeeded, state.failed, state.cancelled, state.late = counters[:4]
        state.expired = counters[4] if len(counters) > 4 else 0
        state.deadlines = SortedList(
            (entry.deadline, t) for t, entry in state.tasks.items() if entry.deadline and not entry.started
        )
        for place in state.queue:
            if (entry := state.tasks.get(place[2])) is not None:
                state.lanes.setdefault(entry.lane, SortedList()).add(place)
        state.outcomes = {int(b): [int(ok), int(err)] for b, (ok, err) in data.get("outcomes", {}).items()}
        state.alerts = {str(n): float(at) for n, at in data.get("alerts", {}).items()}
        state.throttled = int(data.get("throttled", 0))
        state.parked = {str(p): float(u) for p, u in data.get("parked", {}).items()}
        state.disabled = {str(k): str(h) for k, h in data.get("disabled", {}).items()}
        state.last_not_found, state.last_success = (float(x) for x in data.get("model", [0.0, 0.0]))
        state.webhooks = {t: PendingWebhook(**p) for t, p in data.get("webhooks", {}).items()}
        state.tiers = {
            str(pool): {int(b): [int(calls), int(down)] for b, (calls, down) in buckets.items()}
            for pool, buckets in data.get("tiers", {}).items()
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed snapshot: {exc!r}") from exc
    return state
