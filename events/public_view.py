"""The task view as callers see it: public status and stage from the read model's fields.

The read model keeps the queue's own status (`running` from dispatch to outcome: the task
holds a slot), which the store's guards, the workers and the counts rely on. A caller is
told what is happening instead: `running` only while the current attempt's upstream call
is in flight (its `task.started` is in, no outcome yet). Before that the task is `queued`
at a stage:

- `waiting`: for its turn, in the waiting set (or between two attempts);
- `waiting_for_quota`: dispatched (it holds a slot), but the pools' windows are spent
  until `quota_until`;
- `starting`: dispatched, and its call is about to start (a token is granted, or a pool
  has a free place);
- `blocked`: no pool can serve its kind (every key rejected, every pool parked for the
  day), with a reason and until when.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

from events.catalogue import QUEUED, RUNNING

WAITING = "waiting"
WAITING_FOR_QUOTA = "waiting_for_quota"
STARTING = "starting"
BLOCKED = "blocked"
STAGES = (WAITING, WAITING_FOR_QUOTA, STARTING, BLOCKED)

# The read model's `call` field: how far the attempt named by `call_attempt` got.
GRANTED, STARTED, ENDED = "granted", "started", "ended"

# The view's times that also go out as ISO 8601 (`<name>_iso`).
AT_FIELDS = ("submitted_at", "dispatched_at", "started_at", "finished_at", "deadline")


def iso(at: float | None) -> str | None:
    """An epoch time as UTC ISO 8601 ending in "Z" (milliseconds), or None."""
    if at is None:
        return None
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def at_iso(view: Mapping[str, str]) -> dict[str, str | None]:
    """`<name>_iso` for each of the view's times (`AT_FIELDS`)."""
    return {f"{name}_iso": iso(float(value) if (value := view.get(name)) else None) for name in AT_FIELDS}


def _current(view: Mapping[str, str], phase: str) -> bool:
    """Whether the current attempt's call got to `phase` (and no further)."""
    return view.get("call") == phase and view.get("call_attempt") == view.get("attempts", "0")


def call_in_flight(view: Mapping[str, str]) -> bool:
    """Whether the current attempt's upstream call is in flight: it started and has no outcome."""
    if view.get("status") != RUNNING:
        return False
    if "call" in view:
        return _current(view, STARTED)
    # A view written before the call fields: started since its dispatch.
    started, dispatched = view.get("started_at"), view.get("dispatched_at")
    return started is not None and dispatched is not None and float(started) >= float(dispatched)


def public_status(view: Mapping[str, str]) -> str:
    """The status a caller is shown: `running` only while the call is in flight."""
    status = view.get("status") or QUEUED
    if status == RUNNING and not call_in_flight(view):
        return QUEUED
    return status


@dataclass(frozen=True, slots=True)
class Blocked:
    """No pool can serve the task's kind: why, and until when (None: unknown)."""

    reason: str
    until: float | None


@dataclass(frozen=True, slots=True)
class Stage:
    """Where a queued task stands; all None for a task that is not queued."""

    stage: str | None = None
    quota_until: float | None = None
    blocked_reason: str | None = None
    blocked_until: float | None = None

    def fields(self) -> dict[str, str | float | None]:
        """The view's fields this stage sets."""
        return {
            "stage": self.stage,
            "quota_until": self.quota_until,
            "blocked_reason": self.blocked_reason,
            "blocked_until": self.blocked_until,
        }


def stage_of(view: Mapping[str, str], quota_until: float | None, blocked: Blocked | None) -> Stage:
    """The stage of the task `view` holds, given when the pools next free a place (None: a
    place is free now) and whether its kind is blocked."""
    if public_status(view) != QUEUED:
        return Stage()
    if blocked is not None:
        return Stage(BLOCKED, blocked_reason=blocked.reason, blocked_until=blocked.until)
    if view.get("status") != RUNNING or _current(view, ENDED):
        return Stage(WAITING)
    if _current(view, GRANTED) or quota_until is None:
        return Stage(STARTING)
    return Stage(WAITING_FOR_QUOTA, quota_until=quota_until)
