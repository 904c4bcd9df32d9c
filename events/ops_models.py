"""Read models of the operator's views: the task-list indexes and the intake switch.

The task list is served from sorted sets the projection writes with each event, so a page
is one ZREVRANGEBYSCORE (O(log n + page)), never a scan of the tasks:

- every task, a user's tasks and the tasks a token submitted, scored by submit time;
- the tasks of each status, scored by when they took it. A status comes from `view_fields`,
  the same fold as the task view's, so the index and the view cannot disagree; later events
  carry neither user nor token, so a status index is kept for all tasks only.

The intake switch is a hash that the submit's script reads: paused, since when, why, and
the Retry-After a refused submit is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from events.admission import Refusal
from events.catalogue import CANCELLED, EXPIRED, FAILED, QUEUED, RUNNING, SUCCEEDED, TaskSubmitted
from events.intake_events import IntakePaused, IntakeResumed
from events.keys import Keys
from events.read_ops import HSet, Op, Scalar, ZAdd, ZRem

STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED)
# The wait a paused submit is told when the pause named none.
PAUSED_RETRY_SECONDS = 60


class TaskFact(Protocol):
    """An event about one task, at one time."""

    @property
    def task_id(self) -> str:
        """The task."""
        ...

    @property
    def at(self) -> float:
        """When."""
        ...


@dataclass(frozen=True, slots=True)
class TaskIndex:
    """One task list: `all` tasks, a `user`'s, the submits of a `token` (newest submit first),
    or every task of a `status` (the latest to take it first)."""

    by: Literal["all", "user", "token", "status"]
    value: str = ""

    def key(self, keys: Keys) -> str:
        """The sorted set that holds this list."""
        if self.by == "all":
            return keys.tasks
        if self.by == "user":
            return keys.user_tasks(self.value)
        if self.by == "token":
            return keys.token_tasks(self.value)
        return keys.status_tasks(self.value)


def index_ops(event: TaskFact, status: str | None, keys: Keys) -> list[Op]:
    """The index writes of a task event whose view fields set `status` (None: none set)."""
    ops: list[Op] = []
    task_id, at = event.task_id, event.at
    if isinstance(event, TaskSubmitted):
        ops += [ZAdd(keys.tasks, task_id, at), ZAdd(keys.user_tasks(event.user_id), task_id, at)]
        if event.token_id:
            ops.append(ZAdd(keys.token_tasks(event.token_id), task_id, at))
    if status:
        # The previous status is not in the event: leave every other one (ZREM of a
        # non-member does nothing). A new task is in none yet.
        if not isinstance(event, TaskSubmitted):
            ops += [ZRem(keys.status_tasks(s), task_id) for s in STATUSES if s != status]
        ops.append(ZAdd(keys.status_tasks(status), task_id, at))
    return ops


def intake_ops(event: IntakePaused | IntakeResumed, keys: Keys) -> list[Op]:
    """The intake switch as the event leaves it."""
    paused = isinstance(event, IntakePaused)
    fields: dict[str, Scalar] = {"paused": int(paused), "since": event.at, "by": event.by, "reason": ""}
    if isinstance(event, IntakePaused):
        fields.update(reason=event.reason, retry_after=event.retry_after)
    return [HSet(keys.intake, fields)]


@dataclass(frozen=True, slots=True)
class Intake:
    """The intake switch as read: paused or not, since when (0: never switched), why, by whom,
    and the seconds a refused submit is told to wait."""

    paused: bool = False
    since: float = 0.0
    reason: str = ""
    by: str = ""
    retry_after: int = PAUSED_RETRY_SECONDS

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> Intake:
        """The switch from its hash (empty: never switched, so open)."""
        return cls(
            paused=fields.get("paused") == "1",
            since=float(fields.get("since") or 0.0),
            reason=fields.get("reason", ""),
            by=fields.get("by", ""),
            retry_after=int(fields.get("retry_after") or PAUSED_RETRY_SECONDS),
        )


def paused_refusal(retry_after: int, price: int) -> Refusal:
    """The refusal of a submit while intake is paused: nothing written, nothing charged."""
    return Refusal("paused", 0, price, 0, wait_ms=max(1, retry_after) * 1000)
