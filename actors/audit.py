"""Checks that need only the event log: exactly-once endings, slot and rate-limit bounds, dispatch
latency, refunds, and that no task ended `expired` after a call of it started upstream; and what
each route's succeeded tasks came to in credits."""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field

from actors.config.routes import DEFAULT_ROUTE
from actors.queue.state import QueueState, apply
from events.catalogue import (
    CreditsCharged,
    CreditsGranted,
    CreditsRefunded,
    Event,
    KeyTokenGranted,
    StoredEvent,
    TaskAttemptFailed,
    TaskCancelled,
    TaskDispatched,
    TaskExpired,
    TaskFailed,
    TaskLateOutcomeIgnored,
    TaskLeaseExpired,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    TaskUpstreamThrottled,
    WebhookDelivered,
    WebhookFailed,
    stream_id_ms,
)

_ENDINGS = {
    "task.succeeded": "succeeded",
    "task.failed": "failed",
    "task.cancelled": "cancelled",
    "task.expired": "expired",
}
# The endings that give the whole charge back, exactly once.
_REFUNDED = ("failed", "cancelled", "expired")
# A succeeded task served on a route cheaper than its charge gets the difference back with this
# reason, once; its route is the one its `task.succeeded` names ("default" when none is named).
ROUTE_REFUND = "route"

# The event classes each part of `Auditor.feed` looks at; any other event skips that part.
# A worker's `task.expired` frees its attempt's slot like an outcome.
_OUTCOME_TYPES: frozenset[type] = frozenset({TaskSucceeded, TaskAttemptFailed, TaskLeaseExpired, TaskExpired})
_ATTEMPT_TYPES: frozenset[type] = _OUTCOME_TYPES | {
    TaskStarted,
    TaskLateOutcomeIgnored,
    TaskUpstreamThrottled,
}
_CREDIT_TYPES: frozenset[type] = frozenset({CreditsGranted, CreditsCharged, CreditsRefunded})
_ENDING_TYPES: frozenset[type] = frozenset({TaskSucceeded, TaskFailed, TaskCancelled, TaskExpired})
_FEED_TYPES: frozenset[type] = (
    _OUTCOME_TYPES
    | _ENDING_TYPES
    | {TaskSubmitted, TaskDispatched, WebhookDelivered, WebhookFailed, KeyTokenGranted}
)


@dataclass(slots=True)
class AuditReport:
    """What the log says about a run."""

    submitted: int = 0
    ended: dict[str, int] = field(default_factory=dict)
    never_ended: list[str] = field(default_factory=list)
    ended_twice: list[str] = field(default_factory=list)
    max_running: int = 0
    max_window_calls: dict[str, int] = field(default_factory=dict)
    window_capacity: dict[str, int] = field(default_factory=dict)
    dispatch_latency_ms: list[int] = field(default_factory=list)
    overlapping: list[str] = field(default_factory=list)
    still_live: int = 0
    # The credit ledger: totals, refunds by count, and every break of its rules.
    credits: dict[str, int] = field(default_factory=lambda: {"granted": 0, "charged": 0, "refunded": 0})
    refunds: int = 0
    overdrawn: list[str] = field(default_factory=list)
    refund_errors: list[str] = field(default_factory=list)
    # Completion webhooks: outcomes by kind, and tasks recorded delivered more than once.
    webhooks: dict[str, int] = field(default_factory=dict)
    delivered_twice: list[str] = field(default_factory=list)
    # Attempts recorded dispatched more than once, as "task_id#attempt".
    dispatched_twice: list[str] = field(default_factory=list)
    # Tasks that expired although a call of theirs started upstream (a `task.started`).
    expired_after_start: list[str] = field(default_factory=list)
    # `task.expired` naming an attempt never dispatched, or attempt 0 of a task not waiting,
    # as "task_id#attempt".
    expired_unknown_attempt: list[str] = field(default_factory=list)
    # Per route, its succeeded tasks: {"tasks", "net_credits" (charged - refunded),
    # "route_refunds" (credits given back for the route's lower price)}; and the total of the
    # refunds with reason "route" (also counted in `credits["refunded"]` and `refunds`).
    routes: dict[str, dict[str, int]] = field(default_factory=dict)
    route_refunded: int = 0

    @property
    def ok(self) -> bool:
        """Every submitted task ended exactly once, no pool overran its window, no balance went
        below zero, every task that did not succeed was refunded exactly once (a succeeded one
        at most once, for its route, within its charge) and no webhook was recorded delivered
        twice, no attempt was dispatched twice, and every expired task expired before any call
        of it started, from an attempt it had."""
        over = any(self.max_window_calls[p] > self.window_capacity[p] for p in self.max_window_calls)
        credits_ok = not self.overdrawn and not self.refund_errors and not self.delivered_twice
        once = not self.never_ended and not self.ended_twice and not self.dispatched_twice
        expiries_ok = not self.expired_after_start and not self.expired_unknown_attempt
        return once and not over and not self.overlapping and credits_ok and expiries_ok


def max_in_window(times: list[float], window: float) -> int:
    """The most grants found in any half-open window [t, t + window)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def worst_window(grants: list[tuple[float, int]], window: float) -> tuple[int, int]:
    """(calls, limit) of a pool's worst window, from its grants as (time, capacity in force).

    Each grant is checked against the capacity in force when it was made (a pool may learn
    a lower limit mid-run): the grants in the half-open window that ends with it must not
    exceed it. The worst overrun is returned; without one, the most calls in any window
    and the highest capacity.
    """
    ordered = sorted(grants)
    most, top = 0, 0
    worst: tuple[int, int] | None = None
    lo = 0
    for hi, (t, capacity) in enumerate(ordered):
        while t - ordered[lo][0] >= window:
            lo += 1
        calls = hi - lo + 1
        most, top = max(most, calls), max(top, capacity)
        if calls > capacity and (worst is None or calls - capacity > worst[0] - worst[1]):
            worst = (calls, capacity)
    return worst if worst is not None else (most, top)


def _track_attempts(
    event: Event, in_flight: dict[str, int], ended: set[tuple[str, int]], report: AuditReport
) -> None:
    """Flag a task whose attempt starts while another of its attempts still holds the lease.

    A worker writes `task.started` while its call runs, so a fast outcome can precede it:
    a start of an attempt that already ended is not in flight.
    """
    match event:
        case TaskStarted():
            if (event.task_id, event.attempt) in ended:
                return
            if event.task_id in in_flight and in_flight[event.task_id] != event.attempt:
                report.overlapping.append(event.task_id)
            in_flight[event.task_id] = event.attempt
        case (
            TaskSucceeded()
            | TaskAttemptFailed()
            | TaskLeaseExpired()
            | TaskLateOutcomeIgnored()
            | TaskUpstreamThrottled()
            | TaskExpired()
        ):
            ended.add((event.task_id, event.attempt))
            if in_flight.get(event.task_id) == event.attempt:
                del in_flight[event.task_id]
        case _:
            pass


class Auditor:
    """Folds a log one event at a time (so a long log streams through) and reports at the end."""

    def __init__(self) -> None:
        self.report = AuditReport()
        self.state = QueueState()
        self._endings: dict[str, int] = defaultdict(int)
        self._submitted: list[str] = []
        self._grants: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self._windows: dict[str, float] = {}
        self._pending_outcome_ms: int | None = None
        self._in_flight: dict[str, int] = {}
        self._ended_attempts: set[tuple[str, int]] = set()
        self.events = 0
        self._balances: dict[str, int] = defaultdict(int)
        self._charges: dict[str, int] = {}
        self._refunded: dict[str, list[int]] = defaultdict(list)
        # Refunds with reason "route", by task; and the route of each succeeded task not on
        # the default one.
        self._route_refunded: dict[str, list[int]] = defaultdict(list)
        self._route: dict[str, str] = {}
        self._outcome: dict[str, str] = {}
        self._delivered: dict[str, int] = defaultdict(int)
        self._dispatched: set[tuple[str, int]] = set()
        # Tasks a `task.started` was seen for, and those a `task.expired` was (in stream order).
        self._started: set[str] = set()
        self._expired: dict[str, None] = {}

    def _credits(self, event: Event) -> None:
        """Fold the ledger: balances never below zero, one refund per unsuccessful task."""
        report = self.report
        match event:
            case CreditsGranted():
                self._balances[event.user_id] += event.amount
                report.credits["granted"] += event.amount
            case CreditsCharged():
                self._balances[event.user_id] -= event.amount
                self._charges[event.task_id] = self._charges.get(event.task_id, 0) + event.amount
                report.credits["charged"] += event.amount
                if self._balances[event.user_id] < 0 and event.user_id not in report.overdrawn:
                    report.overdrawn.append(event.user_id)
            case CreditsRefunded():
                self._balances[event.user_id] += event.amount
                if event.reason == ROUTE_REFUND:
                    self._route_refunded[event.task_id].append(event.amount)
                    report.route_refunded += event.amount
                else:
                    self._refunded[event.task_id].append(event.amount)
                report.credits["refunded"] += event.amount
                report.refunds += 1
            case _:
                pass

    def _refund_errors(self) -> list[str]:
        errors = []
        for task_id, amounts in self._refunded.items():
            outcome = self._outcome.get(task_id, "live")
            if len(amounts) > 1:
                errors.append(f"{task_id}: refunded {len(amounts)} times")
            elif outcome not in _REFUNDED:
                errors.append(f"{task_id}: refunded but {outcome}")
            elif amounts[0] != self._charges.get(task_id, 0):
                errors.append(
                    f"{task_id}: refunded {amounts[0]} of a charge of {self._charges.get(task_id, 0)}"
                )
        for task_id, outcome in self._outcome.items():
            if outcome in _REFUNDED and self._charges.get(task_id) and task_id not in self._refunded:
                errors.append(f"{task_id}: {outcome} without a refund")
        for task_id, amounts in self._route_refunded.items():
            outcome, charge = self._outcome.get(task_id, "live"), self._charges.get(task_id, 0)
            if outcome != "succeeded":
                errors.append(f"{task_id}: route refund but {outcome}")
            elif len(amounts) > 1:
                errors.append(f"{task_id}: route refund {len(amounts)} times")
            elif not 0 < amounts[0] <= charge:
                errors.append(f"{task_id}: route refund of {amounts[0]} on a charge of {charge}")
        return errors

    def _routes(self) -> dict[str, dict[str, int]]:
        """Per route, its succeeded tasks, their net credits and their route refunds."""
        routes: dict[str, dict[str, int]] = {}
        for task_id, outcome in self._outcome.items():
            if outcome != "succeeded":
                continue
            name = self._route.get(task_id, DEFAULT_ROUTE)
            figures = routes.get(name)
            if figures is None:
                figures = routes[name] = {"tasks": 0, "net_credits": 0, "route_refunds": 0}
            back = sum(self._route_refunded.get(task_id, ()))
            figures["tasks"] += 1
            figures["route_refunds"] += back
            figures["net_credits"] += (
                self._charges.get(task_id, 0) - back - sum(self._refunded.get(task_id, ()))
            )
        return dict(sorted(routes.items()))

    def _expiry(self, event: TaskExpired) -> None:
        """Note a `task.expired`, checked against the fold before it: an attempt above 0 must
        have been dispatched; attempt 0 must find the task waiting for its first turn."""
        t = event.task_id
        self._expired.setdefault(t, None)
        known = (t, event.attempt) in self._dispatched if event.attempt > 0 else self.state.is_waiting(t)
        if not known:
            self.report.expired_unknown_attempt.append(f"{t}#{event.attempt}")

    def feed(self, stored: StoredEvent) -> None:
        """Fold one event."""
        report, state, event = self.report, self.state, stored.event
        self.events += 1
        kind = type(event)
        if kind in _ATTEMPT_TYPES:
            _track_attempts(event, self._in_flight, self._ended_attempts, report)
            if kind is TaskStarted:
                self._started.add(event.task_id)  # type: ignore[union-attr]
            elif kind is TaskExpired:
                self._expiry(event)  # type: ignore[arg-type]
        if kind in _CREDIT_TYPES:
            self._credits(event)
        # Whether an outcome ends the attempt that held the task's slot while others waited:
        # the running lease of this one task, taken before the fold moves it.
        held_before = False
        if kind in _OUTCOME_TYPES and state.queue:
            lease = state.running.get(event.task_id)  # type: ignore[union-attr]
            held_before = lease is not None and lease.attempt == event.attempt  # type: ignore[union-attr]
        apply(state, stored)
        running = len(state.running)
        if running > report.max_running:
            report.max_running = running
        if kind not in _FEED_TYPES:
            return
        match event:
            case TaskSubmitted():
                self._submitted.append(event.task_id)
            case TaskSucceeded() | TaskAttemptFailed() | TaskLeaseExpired() | TaskExpired():
                if held_before and self._pending_outcome_ms is None:
                    self._pending_outcome_ms = stream_id_ms(stored.id)
            case TaskDispatched():
                if (event.task_id, event.attempt) in self._dispatched:
                    report.dispatched_twice.append(f"{event.task_id}#{event.attempt}")
                self._dispatched.add((event.task_id, event.attempt))
                if self._pending_outcome_ms is not None:
                    report.dispatch_latency_ms.append(stream_id_ms(stored.id) - self._pending_outcome_ms)
                    self._pending_outcome_ms = None
            case WebhookDelivered() | WebhookFailed():
                outcome = event.type.removeprefix("webhook.")
                report.webhooks[outcome] = report.webhooks.get(outcome, 0) + 1
                if isinstance(event, WebhookDelivered):
                    self._delivered[event.task_id] += 1
            case KeyTokenGranted():
                self._grants[event.pool].append((event.at, event.capacity))
                self._windows[event.pool] = event.window
            case _:
                pass
        # An ending counts when the fold accepted it: the task left the state.
        if kind in _ENDING_TYPES and event.task_id not in state.tasks:  # type: ignore[union-attr]
            self._endings[event.task_id] += 1  # type: ignore[union-attr]
            ending = _ENDINGS[event.type]
            self._outcome[event.task_id] = ending  # type: ignore[union-attr]
            report.ended[ending] = report.ended.get(ending, 0) + 1
            if kind is TaskSucceeded and event.route not in ("", DEFAULT_ROUTE):  # type: ignore[union-attr]
                self._route[event.task_id] = sys.intern(event.route)  # type: ignore[union-attr]

    def finish(self) -> AuditReport:
        """The report over everything fed so far."""
        report = self.report
        report.submitted = len(self._submitted)
        report.never_ended = [
            t for t in self._submitted if self._endings.get(t, 0) == 0 and t in self.state.tasks
        ]
        report.still_live = len(self.state.tasks)
        report.ended_twice = [t for t, n in self._endings.items() if n > 1]
        for pool, grants in self._grants.items():
            report.max_window_calls[pool], report.window_capacity[pool] = worst_window(
                grants, self._windows[pool]
            )
        report.refund_errors = self._refund_errors()
        report.delivered_twice = [t for t, n in self._delivered.items() if n > 1]
        report.expired_after_start = [t for t in self._expired if t in self._started]
        report.routes = self._routes()
        return report


def audit(events: list[StoredEvent]) -> AuditReport:
    """Fold a whole log and report."""
    auditor = Auditor()
    for stored in events:
        auditor.feed(stored)
    return auditor.finish()
