"""The batch submit: many tasks for their users in one request and one round trip to the store."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import ValidationError

from events.catalogue import QUEUED, TaskSubmitted
from events.public_view import public_status
from events.store import SubmitReceipt
from serve_app.http.admission import admission, refuse_if_blocked, refused
from serve_app.http.auth import USER, Caller
from serve_app.http.context import Context
from serve_app.http.deadlines import CancelAfterHeader, deadline_seconds
from serve_app.http.deps import CallerDep, Ctx
from serve_app.http.estimates import eta_range_of, task_eta
from serve_app.http.gate import BATCH_PATH
from serve_app.http.models import BatchAccepted, BatchProblem, BatchSubmit, BatchSubmitted, SubmitTask
from serve_app.http.problem_docs import responses
from serve_app.http.problems import (
    ApiProblem,
    Forbidden,
    RequestTimeout,
    TooLarge,
    TooManyRequests,
    Unavailable,
    Unprocessable,
)
from serve_app.http.submission import (
    Checked,
    Prepared,
    discard_many,
    key_conflict,
    late_submits,
    prepare,
)

router = APIRouter()

Result = BatchAccepted | BatchProblem


@router.post(
    BATCH_PATH,
    response_model=BatchSubmitted,
    tags=["tasks"],
    responses={
        200: {"description": "Each item's result, in request order: queued (202) or its problem."},
        **responses(
            Forbidden,
            RequestTimeout,
            TooLarge,
            Unprocessable,
            TooManyRequests,
            Unavailable,
            why={
                403: "A user token: a batch acts for users.",
                413: "More than `[limits] max_batch_tasks` items, or too large a body.",
                422: "The body is not a batch, or the `Cancel-After` header does not parse; "
                "nothing is queued.",
                429: "The token is over its submit rate (Retry-After); no item is queued.",
            },
        ),
    },
)
async def submit_batch(
    body: BatchSubmit, c: Ctx, caller: CallerDep, cancel_after: CancelAfterHeader = None
) -> BatchSubmitted:
    """Queue many generation tasks at once, on behalf of their users (service and admin tokens).

    Answers **200** with one result per item, in request order, side by side:
    - a queued item as `POST /v1/tasks` answers it with 202: `{"status": 202, "task_id",
      "task_status", "position", "eta_seconds", "eta_p90_seconds", "balance", "replayed"}`;
    - a refused item as the RFC 9457 problem `POST /v1/tasks` would answer for it:
      `{"status", "type", "title", "detail", "errors", ...}` (402 credits, 403 a user outside
      the token's scope, 409 an idempotency key of a different request, or `deadline-unreachable`
      when the ETA's p90 at the place it would take misses its `deadline_seconds` (unless its
      `if_late` is `accept`), 413/422 bad input, 429 a full backlog, with `retry_after`, or
      `daily-cap` when its price would take its user over `[credits] daily_cap` today (UTC),
      with `retry_after` and `until`; 503 while no quota pool can serve its kind, with
      `retry_after`, unless `[admission] when_blocked = "accept"`).

    Each item is the body of `POST /v1/tasks` and must name its `user_id`; it is charged when
    it is queued, and idempotent on its own `idempotency_key` (a repeat gives the first task
    with `"replayed": true`). All items go to the store in one round trip. The batch counts
    once against the token's submit rate: beyond it the whole request is a 429 with
    Retry-After and nothing is queued. More than `[limits] max_batch_tasks` items (500), or a
    body over `[limits] max_batch_body_bytes`, is a 413; a user token is a 403.

    A `Cancel-After` header (`15s`, `5m`, `1h30m`, as `POST /v1/tasks` takes it) is the deadline
    of every item without its own `deadline_seconds`; one that does not parse is a 422 naming
    it, and nothing is queued.
    """
    if caller.role == USER:
        raise Forbidden("a batch submits on behalf of users: it needs a service or admin token")
    deadline_seconds(None, cancel_after)  # a 422 naming the header when it does not parse
    most = c.config.limits.max_batch_tasks
    if len(body.tasks) > most:
        raise TooLarge(
            f"the batch holds {len(body.tasks)} tasks; the limit is {most} ([limits] max_batch_tasks)",
            errors=[{"field": "tasks", "message": f"at most {most} tasks"}],
        )
    results: list[Result | None] = [None] * len(body.tasks)
    ready: list[tuple[int, Prepared]] = []
    checked: Checked = {}  # an image several items send is checked once
    for i, raw in enumerate(body.tasks):
        try:
            ready.append((i, await _prepare(c, raw, caller, cancel_after, checked)))
        except ApiProblem as exc:
            results[i] = _problem(exc)
    # Deadlines are checked in request order, each item at the place it would take after the
    # items before it; one refused here is never written or charged.
    late = await late_submits(c, [p for _, p in ready])
    for (i, _), problem in zip(ready, late, strict=True):
        if problem is not None:
            results[i] = _problem(problem)
    ready = [(i, p) for (i, p), problem in zip(ready, late, strict=True) if problem is None]
    if ready:
        done = await _submit(c, caller, [p for _, p in ready])
        for (i, _), result in zip(ready, done, strict=True):
            results[i] = result
    out = [r for r in results if r is not None]
    accepted = sum(isinstance(r, BatchAccepted) for r in out)
    return BatchSubmitted(accepted=accepted, refused=len(out) - accepted, results=out)


async def _prepare(
    c: Context, raw: object, caller: Caller, cancel_after: str | None, checked: Checked
) -> Prepared:
    """One item checked as `POST /v1/tasks` checks its body, with its user named; the batch's
    `cancel_after` header is its deadline unless it has a `deadline_seconds` of its own."""
    try:
        item = SubmitTask.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "task", "message": str(e["msg"])}
            for e in exc.errors()
        ]
        names = ", ".join(sorted({e["field"] for e in errors}))
        raise Unprocessable(f"invalid field(s): {names}", errors=errors) from None
    if item.user_id is None:
        raise Unprocessable(
            "a batch's task names the user it is for",
            errors=[{"field": "user_id", "message": "required in a batch"}],
        )
    own = item.deadline_seconds is not None
    prepared = await prepare(c, item, caller, cancel_after=None if own else cancel_after, checked=checked)
    await refuse_if_blocked(c, item.kind)
    return prepared


async def _submit(c: Context, caller: Caller, ready: list[Prepared]) -> list[Result]:
    """The prepared items' images written, their submits made in one round trip, and the images
    of those not queued removed."""
    events = [p.event for p in ready]
    blobs = {ref: data for p in ready for ref, data in p.blobs.items()}
    written = asyncio.ensure_future(c.blobs.write(blobs))
    try:
        await asyncio.shield(written)
        admissions = [admission(c.config, e.kind, caller, e.max_price or None) for e in events]
        receipts = await c.store.submit_many(events, admissions)
        limited = receipts[0].refused
        if limited is not None and limited.reason == "rate":  # then so is every item
            raise refused(c.config, limited, receipts[0].counts, events[0].user_id)
    except BaseException as exc:
        # As for a single submit: nothing a refused or failed batch wrote may outlive it.
        failed = not isinstance(exc, ApiProblem)
        await asyncio.shield(discard_many(c, [e.task_id for e in events], written, ask_store=failed))
        raise
    # Refused items and repeats (whose first task holds its own images) keep no images.
    unused = [e.task_id for e, r in zip(events, receipts, strict=True) if r.refused or r.duplicate_of]
    if unused:
        await asyncio.shield(discard_many(c, unused, written, ask_store=False))
    placed: list[int | None] = [r.position for r in receipts]
    if c.lanes is not None:  # the receipts' ranks are in the whole queue: read them among the lanes
        placed = await c.store.positions([e.task_id for e in events], c.lanes)
    return [await _result(c, e, r, p) for e, r, p in zip(events, receipts, placed, strict=True)]


async def _result(c: Context, event: TaskSubmitted, receipt: SubmitReceipt, placed: int | None) -> Result:
    """An item's result from its receipt (`placed`: its position), as `POST /v1/tasks` would
    answer it."""
    if receipt.refused is not None:
        return _problem(refused(c.config, receipt.refused, receipt.counts, event.user_id))
    first = receipt.duplicate_of
    if first is not None:
        if receipt.duplicate_digest != event.digest:
            return _problem(key_conflict(event.idempotency_key, first))
        view, rank = await c.store.task_view_and_position(first, c.lanes)
        status = public_status(view or {})
        position = rank if (view or {}).get("status", QUEUED) == QUEUED else None
        eta = await task_eta(c, first, view or {}, position, receipt.counts)
        return BatchAccepted(
            task_id=first,
            task_status=status,
            position=position,
            eta_seconds=eta.p50,
            eta_p90_seconds=eta.p90,
            replayed=True,
        )
    position = placed or 0
    return BatchAccepted(
        task_id=event.task_id,
        task_status=QUEUED,
        position=position,
        eta_seconds=(eta := await eta_range_of(c, position, receipt.counts, event.lane)).p50,
        eta_p90_seconds=eta.p90,
        balance=receipt.balance if c.config.credits.enabled else None,
    )


def _problem(exc: ApiProblem) -> BatchProblem:
    """An item's problem, with the fields its own response would carry."""
    extra = {k: v for k, v in exc.extra.items() if v is not None}
    return BatchProblem(
        status=exc.status, type=exc.type_uri, title=exc.title, detail=exc.detail, errors=exc.errors, **extra
    )
