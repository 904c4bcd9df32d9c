"""The task routes: submit, read, watch, audit trail, result, cancel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from actors.blobs import BlobNotFoundError
from events.catalogue import EXPIRED, QUEUED, RUNNING, SUCCEEDED, TaskSubmitted
from events.public_view import public_status
from serve_app.http.admission import admission, refuse_if_blocked, refused
from serve_app.http.archived import archived_log, archived_view, task_log
from serve_app.http.auth import Caller
from serve_app.http.context import Context
from serve_app.http.deadlines import CancelAfterHeader
from serve_app.http.deps import CallerDep, Ctx, TaskId, TaskView, WatchedStream
from serve_app.http.estimates import eta_range_of, task_eta
from serve_app.http.fetch import FetcherDep
from serve_app.http.models import Cancelled, SubmitTask, Submitted, TaskViewOut
from serve_app.http.problem_docs import responses
from serve_app.http.problems import (
    ApiProblem,
    BadRequest,
    Conflict,
    DailyCapReached,
    DeadlineUnreachable,
    Gone,
    NotFound,
    PaymentRequired,
    RequestTimeout,
    TooLarge,
    TooManyRequests,
    Unavailable,
    Unprocessable,
)
from serve_app.http.results import LinksDep
from serve_app.http.submission import (
    IDEMPOTENCY_PATTERN,
    discard_inputs,
    key_conflict,
    prepare,
    refuse_if_late,
)
from serve_app.http.uploads import MULTIPART, MultipartRoute, UploadDep, upload_schema
from serve_app.http.watching import EventStream, stream_messages, task_view_out

router = APIRouter()
# multipart/form-data submits: matched before `submit`, and shown in the schema as its other
# request body.
uploads = APIRouter(route_class=MultipartRoute)
IdempotencyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=200, pattern=IDEMPOTENCY_PATTERN)
]


@uploads.post("/v1/tasks", status_code=202, response_model=Submitted, include_in_schema=False)
async def submit_upload(
    c: Ctx,
    caller: CallerDep,
    upload: UploadDep,
    response: Response,
    idempotency_header: IdempotencyHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> Submitted:
    """`submit` for a multipart/form-data body: the fields as text parts, the images as file parts."""
    prepared = await prepare(
        c, upload.body, caller, idempotency_header, uploads=upload.images, cancel_after=cancel_after
    )
    await refuse_if_blocked(c, upload.body.kind)
    await refuse_if_late(c, prepared)
    return await enqueue(c, prepared.event, prepared.blobs, caller, response)


router.include_router(uploads)


@router.post(
    "/v1/tasks",
    status_code=202,
    response_model=Submitted,
    tags=["tasks"],
    responses=responses(
        BadRequest,
        PaymentRequired,
        RequestTimeout,
        Conflict,
        DeadlineUnreachable,
        TooLarge,
        Unprocessable,
        TooManyRequests,
        DailyCapReached,
        Unavailable,
        why={
            409: "The idempotency key was used for a different request (`conflict`), or the ETA's p90 "
            "already misses the task's deadline (`deadline-unreachable`, nothing charged).",
            413: "The body, a text part, an uploaded image or the fields other than images are over "
            "their `[limits]`.",
            422: "A field is not valid, an image does not decode, or an image URL cannot be fetched.",
            429: "A full backlog or the token's submit rate (`too-many-requests`), or the user's "
            "`[credits] daily_cap` (`daily-cap`, until the next UTC midnight); nothing charged.",
        },
    ),
    openapi_extra={"requestBody": {"content": {MULTIPART: upload_schema()}}},
)
async def submit(
    body: SubmitTask,
    c: Ctx,
    caller: CallerDep,
    response: Response,
    fetcher: FetcherDep,
    idempotency_header: IdempotencyHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> Submitted:
    """Queue a generation task; answers at once with its id, position and ETA.

    Each image is base64 in the JSON body, `{"url": "https://..."}` for genqueue to fetch
    (public addresses only, no redirects, within `[limits] max_image_bytes` and
    `image_url_seconds`; one that fails is a 422 naming it, and nothing is charged), or a
    file part of a `multipart/form-data` body named by its role, beside text parts for the
    other fields (`options` as JSON text).

    With an idempotency key (body field or `Idempotency-Key` header) a repeat of the
    same request by the same user returns the first task; a different request under
    the same key is a 409.

    The task's price is charged at once (402 when the balance does not cover it) and
    refunded if it does not succeed. A full backlog or a token over its submit rate is a
    429 with Retry-After; so is a price that would take the user's credits charged today (UTC
    day, net of refunds) over `[credits] daily_cap` (`daily-cap`, with `spent_today`,
    `daily_cap`, `price` and `until`, the next UTC midnight). Rate, idempotency, credits, the
    daily cap, bounds and the task's place are all decided in one call of the store's submit
    script. While no quota pool can serve the task's kind (every key rejected, every pool
    parked for the day) it is a 503 with Retry-After and nothing is charged, unless
    `[admission] when_blocked = "accept"`.

    A deadline (`deadline_seconds`, or a `Cancel-After` header: `15s`, `5m`, `1h30m`) is when
    the task's upstream call must have started; not started by then, it ends `expired` and is
    refunded. When the p90 of the ETA at the place the task would take already misses it, the
    submit is a 409 `deadline-unreachable` with `eta_seconds`, `eta_p90_seconds` and
    `min_deadline_seconds` (the deadline that would be met), decided before anything is
    charged or written, unless `if_late` is `accept`.
    """
    prepared = await prepare(
        c, body, caller, idempotency_header, fetch=fetcher.fetch_all, cancel_after=cancel_after
    )
    await refuse_if_blocked(c, body.kind)
    await refuse_if_late(c, prepared)
    return await enqueue(c, prepared.event, prepared.blobs, caller, response)


async def enqueue(
    c: Context, event: TaskSubmitted, blobs: dict[str, bytes], caller: Caller, response: Response
) -> Submitted:
    """Store a new task's images and submit it in one call of the store's script; the answer
    to a submit (also an admin's retry). Nothing a refused or failed submit wrote outlives it."""
    task_id = event.task_id
    written = asyncio.ensure_future(c.blobs.write(blobs))
    try:
        await asyncio.shield(written)
        receipt = await c.store.submit(
            event, admission(c.config, event.kind, caller, event.max_price or None)
        )
        if receipt.refused is not None:
            raise refused(c.config, receipt.refused, receipt.counts, event.user_id)
        if receipt.duplicate_of is not None and receipt.duplicate_digest != event.digest:
            raise key_conflict(event.idempotency_key or "", receipt.duplicate_of)
    except BaseException as exc:
        # Shielded, so that a cancelled request still removes its images.
        failed = not isinstance(exc, ApiProblem)
        await asyncio.shield(discard_inputs(c, task_id, written, ask_store=failed))
        raise
    if receipt.duplicate_of is not None:
        # The first task holds its own images: this repeat's copies go.
        await asyncio.shield(discard_inputs(c, task_id, written, ask_store=False))
        response.headers["Idempotent-Replayed"] = "true"
        return await submitted_view(c, receipt.duplicate_of, response)
    position = receipt.position or 0
    if c.lanes is not None:  # the receipt's rank is in the whole queue: read it among the lanes
        position = await c.store.position(task_id, c.lanes) or 0
    response.headers["Location"] = f"/v1/tasks/{task_id}"
    return Submitted(
        task_id=task_id,
        status=QUEUED,
        position=position,
        eta_seconds=(eta := await eta_range_of(c, position, receipt.counts, event.lane)).p50,
        eta_p90_seconds=eta.p90,
        balance=receipt.balance if c.config.credits.enabled else None,
    )


async def submitted_view(c: Context, task_id: str, response: Response) -> Submitted:
    """The answer to a repeated submit: the first task as it stands now."""
    view = await load_view(c, task_id)
    status = public_status(view)
    position = await c.store.position(task_id, c.lanes) if view.get("status", QUEUED) == QUEUED else None
    response.headers["Location"] = f"/v1/tasks/{task_id}"
    counts = await c.store.counts()
    eta = await task_eta(c, task_id, view, position, counts)
    return Submitted(
        task_id=task_id, status=status, position=position, eta_seconds=eta.p50, eta_p90_seconds=eta.p90
    )


async def load_view(c: Context, task_id: str) -> dict[str, str]:
    """The task's view, or a 404."""
    view = await c.store.task_view(task_id)
    if view is None:
        raise NotFound(f"no task {task_id}")
    return view


@router.get(
    "/v1/tasks/{task_id}",
    response_model=TaskViewOut,
    tags=["tasks"],
    responses=responses(Gone, why={410: "The task is archived and reads from the archive are off."}),
)
async def get_task(task_id: TaskId, c: Ctx, caller: CallerDep, links: LinksDep) -> TaskViewOut:
    """The task view: status, position, ETA, attempts, timestamps, error and result URL.

    A task past its retention is read from the archive, or is a 410 when that is off."""
    view, position = await c.store.task_view_and_position(task_id, c.lanes)
    if view is None:
        view = await archived_view(c, task_id, caller)
    elif not caller.may_see(view.get("user_id", "")):
        raise NotFound(f"no task {task_id}")
    return links.attach(task_id, view, await task_view_out(c, task_id, view, position), time.time())


@router.get(
    "/v1/tasks/{task_id}/watch",
    response_class=EventStream,
    tags=["tasks"],
    responses=responses(TooManyRequests),
)
async def watch_task(
    task_id: TaskId,
    c: Ctx,
    stream: WatchedStream,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> AsyncIterable[bytes]:
    """Server-Sent Events: the task view after each state change and each move in the queue.

    A message is sent whenever the status, the stage or the position changes. Message ids are
    `<events seen>-<position>-<stage>` (empty parts left out at the end, an empty position kept
    in the middle: `7-3-waiting.<ms>`, `8--starting.<ms>`, `9`), a queued task's stage followed
    by when the update was made, so that a stage that goes back and forth keeps its ids apart;
    a reconnect with `Last-Event-ID` gets only what changed since. The stream ends after the
    terminal state, or when its token is revoked. A token holding `[limits]
    max_streams_per_token` streams gets a 429.

    A comment line (`: ping`) every 15 s keeps a quiet stream alive. The replica's hub reads
    the watched tasks for all its streams at once (positions at most every 0.25 s while the
    queue moves, a task's own change at once) and hands each stream its message ready to send.
    """
    async for message in stream_messages(stream, last_event_id):
        yield message


@router.get(
    "/v1/tasks/{task_id}/events",
    tags=["tasks"],
    responses=responses(Gone, why={410: "The task is archived and reads from the archive are off."}),
)
async def task_events(task_id: TaskId, c: Ctx, caller: CallerDep) -> dict[str, Any]:
    """The task's audit trail: its events in stream order (from the archive once past its
    retention, or a 410 when that is off)."""
    view = await c.store.task_view(task_id)
    if view is None:
        return {"task_id": task_id, "events": await archived_log(c, task_id, caller)}
    if not caller.may_see(view.get("user_id", "")):
        raise NotFound(f"no task {task_id}")
    return {"task_id": task_id, "events": await task_log(c, task_id)}


@router.get(
    "/v1/tasks/{task_id}/result",
    tags=["tasks"],
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        **responses(Conflict),
    },
)
async def task_result(task_id: TaskId, c: Ctx, view: TaskView) -> Response:
    """The generated image."""
    if view.get("status") == EXPIRED:
        raise Conflict(
            f"task {task_id} has no result: it expired, its deadline passing before its call could "
            "start; its credits were refunded"
        )
    if view.get("status") != SUCCEEDED:
        raise Conflict(f"task {task_id} has no result: it is {view.get('status')}")
    try:
        data = await c.blobs.read(view["result"])
    except BlobNotFoundError as exc:
        raise NotFound(f"the result of task {task_id} is no longer stored") from exc
    return Response(data, media_type=view.get("mime_type", "application/octet-stream"))


@router.delete(
    "/v1/tasks/{task_id}",
    response_model=Cancelled,
    tags=["tasks"],
    responses=responses(Conflict, Unavailable),
)
async def cancel_task(task_id: TaskId, c: Ctx, view: TaskView) -> Cancelled:
    """Cancel a task waiting for its turn (stage `waiting` or `blocked`) and refund its credits.

    A 409 once the task was handed to a worker (it holds a slot: stage `starting` or
    `waiting_for_quota`, or `running`), or has ended: its problem says which.
    """
    internal = view.get("status", QUEUED)
    if internal == RUNNING:
        raise Conflict(not_cancellable(task_id, view))
    if internal != QUEUED:
        raise Conflict(f"task {task_id} is {internal}; only a queued task can be cancelled")
    if c.canceller is None:
        raise Unavailable("the queue is not running here; try again shortly")
    outcome = await c.canceller(task_id)
    if outcome != "cancelled":
        now = await load_view(c, task_id)
        if now.get("status") == RUNNING:
            raise Conflict(not_cancellable(task_id, now))
        raise Conflict(f"task {task_id} is {now.get('status', outcome)}; it can no longer be cancelled")
    after = await load_view(c, task_id)
    return Cancelled(task_id=task_id, status=after.get("status", ""), refunded=int(after.get("refunded", 0)))


def not_cancellable(task_id: str, view: dict[str, str]) -> str:
    """Why a task that holds a slot cannot be cancelled, in words."""
    if public_status(view) == RUNNING:
        return f"task {task_id} is running: its upstream call is in flight and can no longer be cancelled"
    return (
        f"task {task_id} was handed to a worker and holds a slot: its upstream call starts as soon as "
        "the quota allows, so it can no longer be cancelled; only a task still waiting for its turn can"
    )
