"""Submit admission: queue bounds, the user's credits and the task's fair place.

One pure decision that both stores run inside their submit transaction, on what that
transaction read: so a balance is checked and charged atomically, and never goes below zero.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from events.catalogue import CreditsCharged, CreditsGranted, Event, TaskSubmitted, fair_order

DEFAULT_GRANT_REASON = "default grant"
# The newest round of a user who never had a task, and the current round before any dispatch.
NO_ROUND = -1
FIRST_ROUND = 0


@dataclass(frozen=True, slots=True)
class Admission:
    """What a submit must pass: its price, and the backlog bounds (0: no bound)."""

    price: int = 0
    default_grant: int = 0
    per_user_waiting: int = 0
    max_waiting: int = 0


@dataclass(frozen=True, slots=True)
class Seen:
    """What the submit's transaction read.

    `last_round` is the round of the user's newest task (-1: none); `current_round` the
    round of the first waiting task, or of the last dispatched one when nothing waits.
    """

    balance: int
    welcomed: bool
    last_round: int
    current_round: int
    waiting: int

    @property
    def user_waiting(self) -> int:
        """At most this many of the user's tasks wait: one per round from now to its newest."""
        return max(0, self.last_round - self.current_round + 1)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a submit was not accepted: "queue_full", "user_waiting" or "credits"."""

    reason: str
    balance: int
    price: int
    waiting: int


def place_round(current_round: int, last_round: int) -> int:
    """The round of a user's new task: the current one, or the one after its newest task.

    So users take turns: a user with 500 waiting tasks holds rounds r..r+499, and another
    user's first task goes into round r, behind at most one task of each other user.

    The Redis store's script runs this very function, translated by `events.lua`: keep its
    body one `return` of arithmetic, comparisons and `max`/`min` on the two rounds.
    """
    return last_round + 1 if last_round >= current_round else current_round


def admit(
    event: TaskSubmitted, admission: Admission, seen: Seen, round_: int, n: int
) -> list[Event] | Refusal:
    """The events that accept `event` as the n-th task of `round_`, or why it is refused."""
    if admission.max_waiting and seen.waiting >= admission.max_waiting:
        return Refusal("queue_full", seen.balance, admission.price, seen.waiting)
    if admission.per_user_waiting and seen.user_waiting >= admission.per_user_waiting:
        return Refusal("user_waiting", seen.balance, admission.price, seen.user_waiting)
    grant = admission.default_grant if not seen.welcomed else 0
    if admission.price and seen.balance + grant < admission.price:
        return Refusal("credits", seen.balance + grant, admission.price, seen.waiting)
    events: list[Event] = []
    if grant:
        events.append(
            CreditsGranted(
                user_id=event.user_id, amount=grant, reason=DEFAULT_GRANT_REASON, by="config", at=event.at
            )
        )
    events.append(replace(event, order=fair_order(round_, n)))
    if admission.price:
        events.append(
            CreditsCharged(user_id=event.user_id, task_id=event.task_id, amount=admission.price, at=event.at)
        )
    return events
