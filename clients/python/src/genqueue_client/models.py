"""What genqueue answers, as typed, frozen records; each keeps the whole body in `raw`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})

R = TypeVar("R")


def _known(cls: type[R], body: Mapping[str, Any], **extra: Any) -> R:
    """`cls` from the members of `body` it names, plus `extra`; members a newer server adds stay
    in `raw` and are otherwise ignored."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    known: dict[str, Any] = {k: v for k, v in body.items() if k in names}
    known.update(extra, raw=dict(body))
    return cls(**known)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskView:
    """A task as `GET /v1/tasks/{id}` shows it.

    `status` is queued, running (only while its upstream call is in flight), succeeded, failed,
    cancelled or expired (its deadline passed before its call could start; refunded); while
    queued, `stage` is waiting (for its turn, at `position`), waiting_for_quota, starting or
    blocked. `eta_seconds` and `eta_p90_seconds` are the p50 and p90 of the seconds until its
    call starts.
    """

    task_id: str
    status: str
    user_id: str = ""
    kind: str = ""
    stage: str | None = None
    position: int | None = None
    eta_seconds: float | None = None
    eta_p90_seconds: float | None = None
    attempts: int = 0
    submitted_at: float | None = None
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_url: str | None = None
    pool: str | None = None
    price: int | None = None
    refunded: int | None = None
    lane: str | None = None  # the priority lane it rides (with [[lanes]])
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TaskView:
        """The view from its JSON body."""
        return _known(cls, body)

    @property
    def ended(self) -> bool:
        """Whether the task has ended: succeeded, failed, cancelled or expired."""
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True, kw_only=True)
class Submitted:
    """The answer to a submit: the task's id, place and ETA. `replayed` is true when the
    idempotency key had been used for this request before: the task is that first one."""

    task_id: str
    status: str
    idempotency_key: str
    position: int | None = None
    eta_seconds: float | None = None
    eta_p90_seconds: float | None = None
    balance: int | None = None
    replayed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any], idempotency_key: str, replayed: bool) -> Submitted:
        """The answer from its JSON body, the key it was sent with and its replay header."""
        return _known(cls, body, idempotency_key=idempotency_key, replayed=replayed)


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """One message of a task's watch stream: the task view after a change of its status, stage
    or position. `id` is the message id a resumed stream sends back as `Last-Event-ID`."""

    id: str
    view: TaskView

    @property
    def ended(self) -> bool:
        """Whether this is the task's last update: it has ended."""
        return self.view.ended


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """A cancelled task and the credits given back."""

    task_id: str
    status: str
    refunded: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Cancelled:
        """The answer from its JSON body."""
        return _known(cls, body)


@dataclass(frozen=True, slots=True, kw_only=True)
class Me:
    """A user's credits: the balance, what was granted, charged and refunded, and the newest
    ledger entries (each a dict as the API sends it, newest first)."""

    user_id: str
    role: str
    balance: int
    granted: int = 0
    charged: int = 0
    refunded: int = 0
    ledger: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Me:
        """The answer from its JSON body."""
        return _known(cls, body)
