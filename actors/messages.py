"""The messages the actors exchange: an attempt to run, a token to call with, a failed call to learn from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.providers.base import Failure


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """What a worker needs to run one attempt; built by the QueueActor from its state."""

    task_id: str
    attempt: int
    kind: str
    prompt: str
    inputs: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    resent: bool = False
    submitted_at: float = 0.0
    dispatched_at: float = 0.0
    order: float = 0.0  # the task's place in the queue: tokens go out in this order too
    # The token the QueueActor took for this attempt before dispatching it (`tokens_per_round`;
    # no pool: the attempt goes through the key pool, which hands it on with its token).
    pool: str = ""
    key_id: str = ""
    not_before: float = 0.0
    # Its deadline (0: none or no longer applies: a call of it started): no call starts after
    # it; the worker ends the task `task.expired` instead, refunding `price` to `user_id`.
    deadline: float = 0.0
    user_id: str = ""
    price: int = 0
    lane: str = ""  # its task's priority lane: tokens are shared among lanes by weight


@dataclass(frozen=True, slots=True)
class Token:
    """A KeyPool answer: a pool and key for one call, or a refusal until `until` (inf: no pool left).

    `not_before`: the time the grant counts from in its window; a grant made ahead (a place
    about to free) is for a call that goes out no earlier.
    """

    pool: str = ""
    key_id: str = ""
    until: float = 0.0
    reason: str = ""
    not_before: float = 0.0

    @property
    def granted(self) -> bool:
        """Whether this is a token (else a refusal)."""
        return bool(self.pool)


@dataclass(frozen=True, slots=True)
class Ask:
    """A request for one attempt's token (`KeyPool.hand_many`, `KeyPool.acquire`): the task's place in
    the queue, its deadline (epoch s, 0: none), kind and charge (for its routes) and lane."""

    task_id: str
    attempt: int
    order: float = 0.0
    until: float = 0.0
    kind: str = ""
    price: int = 0
    lane: str = ""


# A refusal's reason when the QueueActor took the slot back for a lane below its share: the
# attempt goes back to its place, having made no call (`KeyPool.withdraw`).
YIELDED = "yielded its slot to a lane below its share"


@dataclass(frozen=True, slots=True)
class Grants:
    """The key pool's answer to one round's requests: tokens for the first `len(tokens)` of them,
    in their order, and when a pool can grant again (inf: no pool can serve; see `until`)."""

    tokens: tuple[Token, ...]
    next_free: float
    until: float = 0.0  # while every pool is parked or out of keys: the earliest one is back


@dataclass(frozen=True, slots=True)
class CallFailure:
    """What a worker reports of a call that upstream refused: never the key, only its id."""

    key_id: str
    failure: Failure
    code: int = 0
    retry_after: float | None = None
    quota_id: str = ""
    quota_value: int | None = None
    reason: str = ""
