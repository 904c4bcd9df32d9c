"""Submit admission: the token's submit rate, queue bounds, the user's credits and daily spend cap,
and the task's fair place.

Pure rules that both stores run inside their submit's one atomic step, on what that step
read: so a balance is checked and charged atomically, and never goes below zero. The Redis
store's script runs these very functions, translated by `events.lua`: keep each rule's body
one `return` of integer arithmetic, comparisons and `max`/`min` on its parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from events.catalogue import CreditsCharged, CreditsGranted, Event, TaskSubmitted, fair_order
from events.days import next_utc_midnight

DEFAULT_GRANT_REASON = "default grant"
# The newest round of a user who never had a task, and the current round before any dispatch.
NO_ROUND = -1
FIRST_ROUND = 0
# What `refusal_code` answers, by code (0: accepted).
REASONS = {1: "queue_full", 2: "user_waiting", 3: "credits", 4: "daily_cap"}
QUEUE_FULL, USER_WAITING, CREDITS, DAILY_CAP = REASONS


@dataclass(frozen=True, slots=True)
class Rate:
    """A token's submit rate: at most `limit` submits in any `window_ms` milliseconds (a moving
    window, shared by every replica); `token` names the window (a token id)."""

    token: str
    limit: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class Admission:
    """What a submit must pass: its token's rate (None: no rate), its price, the backlog
    bounds (0: no bound) and the credits a user may be charged per UTC calendar day, net of
    that day's refunds (`daily_cap`; 0: no cap)."""

    price: int = 0
    default_grant: int = 0
    per_user_waiting: int = 0
    max_waiting: int = 0
    rate: Rate | None = None
    daily_cap: int = 0


@dataclass(frozen=True, slots=True)
class Seen:
    """What the submit's transaction read.

    `last_round` is the round of the user's newest task (-1: none); `current_round` the
    round of the first waiting task, or of the last dispatched one when nothing waits;
    `spent_today` the credits charged to the user on the submit's UTC calendar day, net of
    that day's refunds (`events.daily_spend`).
    """

    balance: int
    welcomed: bool
    last_round: int
    current_round: int
    waiting: int
    spent_today: int = 0

    @property
    def user_waiting(self) -> int:
        """At most this many of the user's tasks wait: one per round from now to its newest."""
        return user_waiting(self.current_round, self.last_round)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a submit was not accepted: "rate", "queue_full", "user_waiting", "credits",
    "daily_cap" or "paused" (intake paused by an operator: `events.ops_models`).

    A "rate" refusal names the rate and how long until the token may submit again; a
    "paused" one the wait the operator named; a "daily_cap" one the user's net spend on the
    submit's UTC day, the cap, and `until`, the next UTC midnight (epoch s), `wait_ms` ahead.
    """

    reason: str
    balance: int
    price: int
    waiting: int
    wait_ms: int = 0
    rate: Rate | None = None
    spent_today: int = 0
    daily_cap: int = 0
    until: float = 0.0


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


def capped(spent: int, price: int, cap: int) -> int:
    """1 when a positive `price` on top of `spent`, the user's net spend of the UTC day, would
    pass `cap` (0: no cap), else 0: a spend that reaches the cap exactly passes."""
    return ((1 if spent + price > cap else 0) if price > 0 else 0) if cap > 0 else 0


def refusal_code(queue_full: int, user_full: int, poor: int, over_cap: int) -> int:
    """The first refusal that applies, as a key of REASONS (0: none): a full queue, then a
    user's full share, then a balance short of the price, then the user's daily spend cap.

    The cap comes after the balance: its 429 says the submit may pass after the next UTC
    midnight, which is true only when the balance covers the price (a short balance is a
    402 that waiting does not cure)."""
    return 1 if queue_full > 0 else (2 if user_full > 0 else (3 if poor > 0 else (4 if over_cap > 0 else 0)))


def rate_wait(used: int, cost: int, limit: int, oldest: int, window: int, now: int) -> int:
    """Milliseconds until `cost` more submits fit a moving window of `limit` per `window` ms
    that holds `used`, the oldest at `oldest`; 0 when they fit now."""
    return 0 if used + cost <= limit else max(1, oldest + window - now)


def refusal_of(
    code: int,
    balance: int,
    grant: int,
    price: int,
    waiting: int,
    users_waiting: int,
    spent_today: int = 0,
    daily_cap: int = 0,
    at: float = 0.0,
) -> Refusal | None:
    """The Refusal that `refusal_code`'s answer stands for, with the figures it was decided on:
    the user's balance and grant, the queue's and the user's waiting tasks, and the user's net
    spend of the UTC day of `at` (the submit's time) against its daily cap."""
    if not code:
        return None
    reason = REASONS[code]
    if reason == "credits":
        return Refusal(reason, balance + grant, price, waiting)
    if reason == "daily_cap":
        until = next_utc_midnight(at)
        wait_ms = max(1, math.ceil((until - at) * 1000))
        return Refusal(reason, balance + grant, price, waiting, wait_ms, None, spent_today, daily_cap, until)
    return Refusal(reason, balance, price, users_waiting if reason == "user_waiting" else waiting)


def refuse(admission: Admission, seen: Seen, at: float = 0.0) -> Refusal | None:
    """Why `seen` cannot take one more task under `admission` at `at` (the submit's time, for
    a daily cap's next UTC midnight), or None when it can."""
    grant = grant_of(admission.default_grant, int(seen.welcomed))
    code = refusal_code(
        over(seen.waiting, admission.max_waiting),
        over(seen.user_waiting, admission.per_user_waiting),
        short(seen.balance + grant, admission.price),
        capped(seen.spent_today, admission.price, admission.daily_cap),
    )
    return refusal_of(
        code,
        seen.balance,
        grant,
        admission.price,
        seen.waiting,
        seen.user_waiting,
        seen.spent_today,
        admission.daily_cap,
        at,
    )


def admit(
    event: TaskSubmitted, admission: Admission, seen: Seen, round_: int, n: int
) -> list[Event] | Refusal:
    """The events that accept `event` as the n-th task of `round_`, or why it is refused."""
    refusal = refuse(admission, seen, event.at)
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
