"""Whether a submit may enter: from its headers (token, role, cap on submits in progress), then in
the store's one script call (the token's submit rate, credits, backlog bounds), and the problem
that answers a refusal."""

from __future__ import annotations

import datetime as dt
import functools
import math

import limits
from starlette.datastructures import Headers
from starlette.types import Scope

from actors.config import Config, LimitsConfig, charged_price, default_lane, lowest_price
from events.admission import Admission, Rate, Refusal
from events.store import QueueCounts
from serve_app.http.auth import USER, Caller, authenticate
from serve_app.http.context import Context
from serve_app.http.deps import tokens
from serve_app.http.estimates import refusal_wait
from serve_app.http.gate import BATCH_PATH, Admitted
from serve_app.http.problems import (
    ApiProblem,
    DailyCapReached,
    Forbidden,
    PaymentRequired,
    TooManyRequests,
    Unavailable,
    Unprocessable,
)
from serve_app.http.serving import serving_now

# The Retry-After of a submit refused while no pool serves and none is known to come back
# (upstream rejected every key): about when an operator may have replaced them.
BLOCKED_RETRY_SECONDS = 60
# The longest Retry-After of such a refusal (a pool parked for the day is back within one).
BLOCKED_RETRY_MAX = 86_400


@functools.lru_cache(maxsize=16)
def parse_rate(text: str) -> tuple[int, int]:
    """(submits, window in ms) of a `limits` rate string such as "10/second"."""
    item = limits.parse(text)
    return item.amount, item.get_expiry() * 1000


def submit_rate(lim: LimitsConfig, caller: Caller) -> Rate:
    """The caller's token's submit rate: `user_submit_rate` for user tokens, else
    `service_submit_rate`; a moving window per token, shared by every replica."""
    text = lim.user_submit_rate if caller.role == USER else lim.service_submit_rate
    limit, window_ms = parse_rate(text)
    return Rate(caller.token_id or "open", limit, window_ms)


async def admit(ctx: Context, scope: Scope) -> Admitted:
    """A submit checked from its headers alone, before any body byte is read: the caller
    (kept in the request's state for the route), its role (a batch acts for users: service
    and admin tokens only), its cap on submits in progress and the lane it waits in at the
    gate. Its rate is checked with the submit itself, in the store's script."""
    header = Headers(scope=scope).get("authorization") or None
    caller = await authenticate(ctx.store, header, ctx.config.auth.required, cache=tokens(ctx))
    if caller.role == USER and scope["path"].rstrip("/") == BATCH_PATH:
        raise Forbidden("a batch submits on behalf of users: it needs a service or admin token")
    scope.setdefault("state", {})["caller"] = caller
    lim = ctx.config.limits
    cap = lim.max_submits_per_token if caller.role == USER else lim.max_submits_per_service_token
    own = lane_of(ctx.config, caller, None)
    return Admitted(caller.token_id or "open", cap, own, names_lane=caller.role != USER)


def check_max_price(config: Config, kind: str, max_price: int | None) -> None:
    """A 422 naming `max_price` when it is below the price of the first route serving `kind`."""
    least = lowest_price(config, kind)
    if max_price is not None and max_price < least:
        raise Unprocessable(
            f"max_price {max_price} is below the price of a {kind} task, {least} credit(s)",
            errors=[{"field": "max_price", "message": f"at least {least}"}],
        )


def lane_of(config: Config, caller: Caller, asked: str | None) -> str:
    """The lane a submit by `caller` rides: the one `asked` for (a service or admin token may
    name any configured lane; a user token only its own), else the token's lane, else the
    default lane ("" with no lanes); a 422 naming `lane` for a lane not configured."""
    names = [lane.name for lane in config.lanes]
    own = caller.lane if caller.lane in names else default_lane(config)
    if asked is None:
        return own
    if asked not in names:
        known = f"one of {', '.join(names)}" if names else "left out: this genqueue has no [[lanes]]"
        raise Unprocessable(f"lane {asked!r} is not configured", errors=[{"field": "lane", "message": known}])
    if caller.role == USER and asked != own:
        raise Forbidden(f"a user token's tasks ride its lane, {own!r}; leave lane out")
    return asked


def admission(config: Config, kind: str, caller: Caller, max_price: int | None = None) -> Admission:
    """What a submit of `kind` by `caller` must pass: it is charged `charged_price` (the first
    fallback route's price, or with `max_price` the dearest route's within it)."""
    credits, queue = config.credits, config.queue
    return Admission(
        price=charged_price(config, kind, max_price),
        default_grant=credits.default_grant if credits.enabled else 0,
        per_user_waiting=queue.per_user_waiting,
        max_waiting=queue.max_waiting,
        rate=submit_rate(config.limits, caller),
        daily_cap=credits.daily_cap if credits.enabled else 0,
    )


def refused(config: Config, refusal: Refusal, counts: QueueCounts, user_id: str) -> ApiProblem:
    """The problem for a refused submit: 402 for credits, 429 with Retry-After for the token's
    submit rate, a full backlog or the user's daily spend cap, 503 with Retry-After while
    intake is paused."""
    if refusal.reason == "paused":
        wait = max(1, math.ceil(refusal.wait_ms / 1000))
        problem = Unavailable(
            f"new tasks are paused by an operator; queued tasks still run; nothing was charged; "
            f"try again in {wait} s",
            wait,
        )
        problem.extra.update(intake="paused", retry_after=wait)
        return problem
    if refusal.reason == "credits":
        return PaymentRequired(
            f"{user_id} has {refusal.balance} credit(s); this task costs {refusal.price}",
            balance=refusal.balance,
            price=refusal.price,
        )
    if refusal.reason == "daily_cap":
        return daily_cap_problem(refusal, user_id)
    if refusal.reason == "rate":
        wait = max(1, math.ceil(refusal.wait_ms / 1000))
        rate = refusal.rate
        allowed = f"{rate.limit} per {rate.window_ms / 1000:g} s" if rate else "no more now"
        return TooManyRequests(f"this token may submit {allowed}; try again in {wait} s", wait)
    wait = refusal_wait(config, refusal, counts)
    if refusal.reason == "queue_full":
        detail = f"the queue holds {counts.waiting} waiting tasks, its limit"
    else:
        detail = f"{user_id} has {refusal.waiting} tasks waiting, the limit per user"
    return TooManyRequests(f"{detail}; try again in about {wait} s", wait, waiting=refusal.waiting)


def daily_cap_problem(refusal: Refusal, user_id: str) -> DailyCapReached:
    """The 429 of a submit over the user's daily spend cap: what was spent, the cap, the price,
    and until when (the next UTC midnight, in `Retry-After` too)."""
    wait = max(1, math.ceil(refusal.wait_ms / 1000))
    until = dt.datetime.fromtimestamp(refusal.until, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return DailyCapReached(
        f"{user_id} was charged {refusal.spent_today} of its {refusal.daily_cap} credits today (UTC); "
        f"this task costs {refusal.price}; nothing was charged; try again after {until}",
        wait,
        spent_today=refusal.spent_today,
        daily_cap=refusal.daily_cap,
        price=refusal.price,
        until=refusal.until,
        until_iso=until,
    )


async def refuse_if_blocked(ctx: Context, kind: str) -> None:
    """A 503 problem with Retry-After for a submit of `kind` while no pool can serve it, under
    `[admission] when_blocked = "refuse"`; nothing is written or charged. Decided from the pools'
    views the replica already reads (`Context.recent_pools`), so a pool that stops or starts
    serving counts within that cache's age."""
    if ctx.config.admission.when_blocked != "refuse":
        return
    now = await serving_now(ctx)
    blocked = now.blocked.get(kind)
    if blocked is None:
        return
    if blocked.until is None:
        wait = BLOCKED_RETRY_SECONDS
    else:
        wait = min(BLOCKED_RETRY_MAX, max(1, math.ceil(blocked.until - now.at)))
    problem = Unavailable(
        f"no quota pool can serve {kind} tasks now: {blocked.reason}; nothing was charged; "
        f"try again in {wait} s",
        wait,
    )
    problem.extra.update(
        kind=kind, blocked_reason=blocked.reason, blocked_until=blocked.until, retry_after=wait
    )
    raise problem
