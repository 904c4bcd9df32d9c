"""Submit admission: the token's submit rate, queue bounds, the user's credits and the task's fair place.

Pure rules that both stores run inside their submit's one atomic step, on what that step
read: so a balance is checked and charged atomically, and never goes below zero. The Redis
store's script runs these very functions, translated by `events.lua`: keep each rule's body
one `return` of integer arithmetic, comparisons and `max`/`min` on its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from events.catalogue import CreditsCharged, CreditsGranted, Event, TaskSubmitted, fair_order

DEFAULT_GRANT_REASON = "default grant"
# The newest round of a user who never had a task, and the current round before any dispatch.
NO_ROUND = -1
FIRST_ROUND = 0
# What `refusal_code` answers, by code (0: accepted).
REASONS = {1: "queue_full", 2: "user_waiting", 3: "credits"}
QUEUE_FULL, USER_WAITING, CREDITS = REASONS


@dataclass(frozen=True, slots=True)
class Rate:
    """A token's submit rate: at most `limit` submits in any `window_ms` milliseconds (a moving
    window, shared by every replica); `token` names the window (a token id)."""

    token: str
    limit: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class Admission:
    """What a submit must pass: its token's rate (None: no rate), its price, and the backlog
    bounds (0: no bound)."""

    price: int = 0
    default_grant: int = 0
    per_user_waiting: int = 0
    max_waiting: int = 0
    rate: Rate | None = None


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
        return user_waiting(self.current_round, self.last_round)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a submit was not accepted: "rate", "queue_full", "user_waiting", "credits" or
    "paused" (intake paused by an operator: `events.ops_models`).

    A "rate" refusal names the rate and how long until the token may submit again; a
    "paused" one the wait the operator named.
    """

    reason: str
    balance: int
    price: int
    waiting: int
    wait_ms: int = 0
    rate: Rate | None = None


def place_round(current_round: int, last_round: int) -> int:
    """The round of a user's new task: the current one, or the one after its newest task.

    So users take turns: a user with 500 waiting tasks holds rounds r..r+499, and another
    user's first task goes into round r, behind at most one task of each other user.
    """
    return last_round + 1 if last_round >= current_round else current_round


def user_waiting(current_round: int, last_round: int) -> int:
    """At most this many of a user's tasks wait: one per round from the current to its newest."""
    return max(0, last_round - current_round + 1)


def grant_of(default_grant: int, welcomed: int) -> int:
    """The credits granted with a submit: the default grant, once per user."""
    return default_grant if welcomed < 1 else 0


def over(count: int, bound: int) -> int:
    """1 when `count` has reached `bound` (0: no bound), else 0."""
    return (1 if count >= bound else 0) if bound > 0 else 0


def short(funds: int, price: int) -> int:
    """1 when `funds` do not cover a positive `price`, else 0."""
    return (1 if funds < price else 0) if price > 0 else 0


def refusal_code(queue_full: int, user_full: int, poor: int) -> int:
    """The first refusal that applies, as a key of REASONS (0: none): a full queue, then a
    user's full share, then a balance short of the price."""
    return 1 if queue_full > 0 else (2 if user_full > 0 else (3 if poor > 0 else 0))


def rate_wait(used: int, cost: int, limit: int, oldest: int, window: int, now: int) -> int:
    """Milliseconds until `cost` more submits fit a moving window of `limit` per `window` ms
    that holds `used`, the oldest at `oldest`; 0 when they fit now."""
    return 0 if used + cost <= limit else max(1, oldest + window - now)


def refusal_of(
    code: int, balance: int, grant: int, price: int, waiting: int, users_waiting: int
) -> Refusal | None:
    """The Refusal that `refusal_code`'s answer stands for, with the figures it was decided on:
    the user's balance and grant, the queue's and the user's waiting tasks."""
    if not code:
        return None
    reason = REASONS[code]
    if reason == "credits":
        return Refusal(reason, balance + grant, price, waiting)
    return Refusal(reason, balance, price, users_waiting if reason == "user_waiting" else waiting)


def refuse(admission: Admission, seen: Seen) -> Refusal | None:
    """Why `seen` cannot take one more task under `admission`, or None when it can."""
    grant = grant_of(admission.default_grant, int(seen.welcomed))
    code = refusal_code(
        over(seen.waiting, admission.max_waiting),
        over(seen.user_waiting, admission.per_user_waiting),
        short(seen.balance + grant, admission.price),
    )
    return refusal_of(code, seen.balance, grant, admission.price, seen.waiting, seen.user_waiting)


def admit(
    event: TaskSubmitted, admission: Admission, seen: Seen, round_: int, n: int
) -> list[Event] | Refusal:
    """The events that accept `event` as the n-th task of `round_`, or why it is refused."""
    refusal = refuse(admission, seen)
    if refusal is not None:
        return refusal
    grant = grant_of(admission.default_grant, int(seen.welcomed))
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
