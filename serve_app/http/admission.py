"""Whether a submit may enter: from its headers (token, submit rate, cap), then in the store
(credits, backlog bounds), and the problem that answers a refusal."""

from __future__ import annotations

import math
import time

import limits
from starlette.datastructures import Headers
from starlette.types import Scope

from actors.config import Config, LimitsConfig
from events.admission import Admission, Refusal
from events.store import QueueCounts
from serve_app.http.auth import USER, Caller, authenticate
from serve_app.http.context import Context
from serve_app.http.estimates import refusal_wait
from serve_app.http.gate import Admitted
from serve_app.http.problems import ApiProblem, PaymentRequired, TooManyRequests, Unavailable

# Each role's submit rate, parsed once: USER for user tokens, "other" for the rest.
Rates = dict[str, limits.RateLimitItem]


def submit_rates(lim: LimitsConfig) -> Rates:
    """The submit rates of [limits], parsed."""
    return {USER: limits.parse(lim.user_submit_rate), "other": limits.parse(lim.service_submit_rate)}


async def check_rate(ctx: Context, rates: Rates, caller: Caller) -> None:
    """A 429 when the caller's token has used its submit rate (a moving window in Redis,
    shared by every replica)."""
    item = rates[USER] if caller.role == USER else rates["other"]
    key = caller.token_id or "open"
    try:
        if await ctx.limiter.hit(item, key):
            return
        stats = await ctx.limiter.get_window_stats(item, key)
    except limits.errors.StorageError as exc:
        raise Unavailable("the event store is unreachable; try again shortly") from exc
    wait = max(1, math.ceil(stats.reset_time - time.time()))
    raise TooManyRequests(f"this token may submit {item}; try again in {wait} s", wait)


async def admit(ctx: Context, rates: Rates, scope: Scope) -> Admitted:
    """A submit checked from its headers alone, before any body byte is read: the caller
    (kept in the request's state for the route), its submit rate, and its cap on submits
    in progress."""
    header = Headers(scope=scope).get("authorization") or None
    caller = await authenticate(ctx.store, header, ctx.config.auth.required)
    await check_rate(ctx, rates, caller)
    scope.setdefault("state", {})["caller"] = caller
    lim = ctx.config.limits
    cap = lim.max_submits_per_token if caller.role == USER else lim.max_submits_per_service_token
    return Admitted(caller.token_id or "open", cap)


def admission(config: Config, kind: str) -> Admission:
    """What a submit of `kind` must pass."""
    credits, queue = config.credits, config.queue
    return Admission(
        price=credits.price(kind),
        default_grant=credits.default_grant if credits.enabled else 0,
        per_user_waiting=queue.per_user_waiting,
        max_waiting=queue.max_waiting,
    )


def refused(config: Config, refusal: Refusal, counts: QueueCounts, user_id: str) -> ApiProblem:
    """The problem for a refused submit: 402 for credits, 429 with Retry-After for a full backlog."""
    if refusal.reason == "credits":
        return PaymentRequired(
            f"{user_id} has {refusal.balance} credit(s); this task costs {refusal.price}",
            balance=refusal.balance,
            price=refusal.price,
        )
    wait = refusal_wait(config, refusal, counts)
    if refusal.reason == "queue_full":
        detail = f"the queue holds {counts.waiting} waiting tasks, its limit"
    else:
        detail = f"{user_id} has {refusal.waiting} tasks waiting, the limit per user"
    return TooManyRequests(f"{detail}; try again in about {wait} s", wait, waiting=refusal.waiting)
