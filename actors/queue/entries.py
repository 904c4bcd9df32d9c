"""What the queue keeps per task, per slot, per ended attempt and per pending webhook: frozen
values, replaced and never changed, so that a shallow copy of the state is a consistent one.

They are msgspec structs: made and replaced in its C code, ten times faster than a frozen
dataclass, on the fold's hottest path (three replacements and a lease per task)."""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class TaskEntry(Struct, frozen=True):
    """What the queue keeps of a live (not yet ended) task; replaced, never changed, so that a
    shallow copy of the state is a consistent one (see `frozen_copy`)."""

    task_id: str
    user_id: str
    kind: str
    prompt: str
    inputs: dict[str, str]
    options: dict[str, Any]
    order: float  # the task's place: waiting tasks start by (order, seq)
    seq: int
    attempts: int = 0
    throttled: int = 0  # attempts that ended in a 429: they do not count against the retry budget
    at: float = 0.0  # when it was submitted
    price: int = 0  # credits charged at submit, refunded if it does not succeed
    webhook_url: str = ""  # where to POST the task view when it ends
    token_id: str = ""  # the submitting token, whose secret signs the webhook
    deadline: float = 0.0  # not started upstream by then, it expires (0: never)
    started: bool = False  # a call of it started upstream: its deadline no longer applies
    lane: str = ""  # its priority lane ("": no lanes)

    @property
    def place(self) -> tuple[float, int, str]:
        """The task's key in the waiting queue."""
        return (self.order, self.seq, self.task_id)

    @property
    def charged(self) -> int:
        """Attempts that count against the retry budget."""
        return self.attempts - self.throttled


class Lease(Struct, frozen=True):
    """A slot held by one attempt, dispatched at `since`, until `deadline`."""

    attempt: int
    worker: int
    deadline: float
    since: float = 0.0


class EndedAttempt(Struct, frozen=True):
    """An attempt that ended without an image and awaits a retry-or-fail decision."""

    attempt: int
    error: str
    retryable: bool


class PendingWebhook(Struct, frozen=True):
    """A completion webhook of an ended task, not yet delivered nor given up.

    `attempts` made so far; the next is due at `next_at`; `ended_at` starts its time bound.
    """

    task_id: str
    url: str
    token_id: str
    ended_at: float
    attempts: int = 0
    next_at: float = 0.0
