"""The credit routes: a caller's balance and ledger, and an admin's grant."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from events.catalogue import CreditsGranted
from events.daily_spend import SPENT, day_id
from events.days import utc_day
from serve_app.http.deps import AdminDep, CallerDep, Ctx
from serve_app.http.models import Grant, Granted, Me

router = APIRouter()


@router.get("/v1/me", response_model=Me, response_model_exclude_none=True, tags=["credits"])
async def me(
    c: Ctx,
    caller: CallerDep,
    user_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            pattern=r"^[A-Za-z0-9._@:-]+$",
            description="A service or admin token may ask for one of its users.",
        ),
    ] = None,
) -> Me:
    """The caller's balance and its newest ledger entries; under a `[credits] daily_cap`, also
    `spent_today` (credits charged today, the UTC calendar day, net of today's refunds) and
    `daily_cap`."""
    who = caller.acts_for(user_id)
    totals, ledger = await c.store.user(who)
    credits = c.config.credits
    cap = credits.daily_cap if credits.enabled else 0
    spent = None
    if cap:
        # The day's count is a hash of its own, read as the user hash of the day's id.
        day, _ = await c.store.user(day_id(who, utc_day(time.time())), entries=0)
        spent = int(day.get(SPENT, 0))
    return Me(
        user_id=who,
        role=caller.role,
        balance=int(totals.get("balance", 0)),
        granted=int(totals.get("granted", 0)),
        charged=int(totals.get("charged", 0)),
        refunded=int(totals.get("refunded", 0)),
        ledger=ledger,
        spent_today=spent,
        daily_cap=cap or None,
    )


@router.post("/v1/admin/credits", response_model=Granted, tags=["credits"])
async def grant(body: Grant, c: Ctx, caller: AdminDep) -> Granted:
    """Add credits to a user's balance (admin)."""
    event = CreditsGranted(
        user_id=body.user_id, amount=body.amount, reason=body.reason, by=caller.token_id, at=time.time()
    )
    await c.store.append([event])
    totals, _ = await c.store.user(body.user_id, entries=0)
    return Granted(user_id=body.user_id, amount=body.amount, balance=int(totals.get("balance", 0)))
