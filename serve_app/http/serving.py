"""Whether the quota pools can serve each kind now, from the pools' views the ingress already reads
(`Context.recent_pools`, at most POOLS_FRESH_SECONDS old): the kinds no pool can serve, and when
the spent windows next free a place."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from actors.forecast import PoolWindow
from actors.keypool.status import outage
from events.catalogue import KINDS
from events.days import next_pacific_midnight
from events.public_view import Blocked
from serve_app.http.context import Context
from serve_app.http.pools import PoolView


@dataclass(frozen=True, slots=True)
class Serving:
    """What the pools can do at `at`: the kinds none of them can serve (kind -> why, until when),
    and when a spent window next frees a place (None: a place is free now, or none will be)."""

    at: float
    blocked: dict[str, Blocked] = field(default_factory=dict)
    quota_until: float | None = None


def full_until(window: PoolWindow, now: float) -> float:
    """When `window` next holds a free place: now while it has one, else a window (and the
    margin) after its capacity-th newest grant; inf without places."""
    if window.capacity < 1:
        return math.inf
    if len(window.grants) < window.capacity:
        return now
    return window.grants[-window.capacity] + window.window


def free_at(view: PoolView, now: float) -> float:
    """When `view`'s pool may next grant a call: after its parking or cooldown, once its window
    and each window it counts against hold a free place and its day has calls left (inf: it
    does not serve)."""
    if not view.serving:
        return math.inf
    at = max(now, view.available_from)
    for window in (view.limit_window(), *view.linked):
        at = max(at, full_until(window, now))
    if view.rpd and view.calls_today >= view.rpd:
        at = max(at, next_pacific_midnight(now))
    return at


def serving(views: Sequence[PoolView], now: float) -> Serving:
    """What the pools of `views` can do at `now`. Every pool serves every kind, so a kind is
    blocked exactly when no pool serves at all (`actors.keypool.status.outage`). A pool that
    counts against another is free only when that one's window has a place too."""
    down = outage(view.status for view in views)
    if down is not None:
        blocked = Blocked(down.reason, down.until)
        return Serving(now, dict.fromkeys(KINDS, blocked))
    soonest = min((free_at(view, now) for view in views), default=math.inf)
    return Serving(now, quota_until=soonest if now < soonest < math.inf else None)


async def serving_now(ctx: Context) -> Serving:
    """What the pools can do now, from the replica's recent pools' views."""
    return serving(await ctx.recent_pools(), time.time())
