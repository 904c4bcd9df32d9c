"""The task routes: submit, read, watch, audit trail, result, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from actors.blobs import BlobNotFoundError
from events.catalogue import QUEUED, RUNNING, SUCCEEDED, TaskSubmitted
from events.public_view import public_status
from serve_app.http.admission import admission, refuse_if_blocked, refused
from serve_app.http.auth import Caller
from serve_app.http.context import Context
from serve_app.http.deps import CallerDep, Ctx, TaskId, TaskView, WatchedStream
from serve_app.http.estimates import eta_range_of, task_eta
from serve_app.http.models import Cancelled, SubmitTask, Submitted, TaskViewOut
from serve_app.http.problems import ApiProblem, Conflict, NotFound, Unavailable
from serve_app.http.submission import IDEMPOTENCY_PATTERN, discard_inputs, key_conflict, prepare
from serve_app.http.watching import EventStream, stream_messages, task_view_out

router = APIRouter()


@router.post("/v1/tasks", status_code=202, response_model=Submitted, tags=["tasks"])
async def submit(
    body: SubmitTask,
    c: Ctx,
    caller: CallerDep,
    response: Response,
    idempotency_header: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=200, pattern=IDEMPOTENCY_PATTERN)
    ] = None,
) -> Submitted:
    """Queue a generation task; answers at once with its id, position and ETA.

    With an idempotency key (body field or `Idempotency-Key` header) a repeat of the
    same request by the same user returns the first task; a different request under
    the same key is a 409.

    The task's price is charged at once (402 when the balance does not cover it) and
    refunded if it does not succeed. A full backlog or a token over its submit rate is a
    429 with Retry-After. Rate, idempotency, credits, bounds and the task's place are all
    decided in one call of the store's submit script. While no quota pool can serve the
    task's kind (every key rejected, every pool parked for the day) it is a 503 with
    Retry-After and nothing is charged, unless `[admission] when_blocked = "accept"`.
    """
    prepared = await prepare(c, body, caller, idempotency_header)
    await refuse_if_blocked(c, body.kind)
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
        receipt = await c.store.submit(event, admission(c.config, event.kind, caller))
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
    response.headers["Location"] = f"/v1/tasks/{task_id}"
    return Submitted(
        task_id=task_id,
        status=QUEUED,
        position=position,
        eta_seconds=(eta := await eta_range_of(c, position, receipt.counts)).p50,
        eta_p90_seconds=eta.p90,
        balance=receipt.balance if c.config.credits.enabled else None,
    )


async def submitted_view(c: Context, task_id: str, response: Response) -> Submitted:
    """The answer to a repeated submit: the first task as it stands now."""
    view = await load_view(c, task_id)
    status = public_status(view)
    position = await c.store.position(task_id) if view.get("status", QUEUED) == QUEUED else None
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


@router.get("/v1/tasks/{task_id}", response_model=TaskViewOut, tags=["tasks"])
async def get_task(task_id: TaskId, c: Ctx, caller: CallerDep) -> TaskViewOut:
    """The task view: status, position, ETA, attempts, timestamps, error and result URL."""
    view, position = await c.store.task_view_and_position(task_id)
    if view is None or not caller.may_see(view.get("user_id", "")):
        raise NotFound(f"no task {task_id}")
    return await task_view_out(c, task_id, view, position)


@router.get("/v1/tasks/{task_id}/watch", response_class=EventStream, tags=["tasks"])
async def watch_task(
    task_id: TaskId,
    c: Ctx,
    stream: WatchedStream,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> AsyncIterable[bytes]:
    """Server-Sent Events: the task view after each state change and each move in the queue.

    A message is sent whenever the status, the stage or the position changes. Message ids are
    `<events seen>-<position>-<stage>` (empty parts left out at the end, an empty position kept
    in the middle: `7-3-waiting`, `8--starting`, `9`); a reconnect with `Last-Event-ID` gets
    only what changed since. The stream ends after the terminal state, or when its token is
    revoked. A token holding `[limits] max_streams_per_token` streams gets a 429.

    A comment line (`: ping`) every 15 s keeps a quiet stream alive. The replica's hub reads
    the watched tasks for all its streams at once (positions at most every 0.25 s while the
    queue moves, a task's own change at once) and hands each stream its message ready to send.
    """
    async for message in stream_messages(stream, last_event_id):
        yield message


@router.get("/v1/tasks/{task_id}/events", tags=["tasks"])
async def task_events(task_id: TaskId, c: Ctx, _view: TaskView) -> dict[str, Any]:
    """The task's audit trail: its events in stream order."""
    return {"task_id": task_id, "events": await c.store.task_log(task_id)}


@router.get(
    "/v1/tasks/{task_id}/result",
    tags=["tasks"],
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}},
)
async def task_result(task_id: TaskId, c: Ctx, view: TaskView) -> Response:
    """The generated image."""
    if view.get("status") != SUCCEEDED:
        raise Conflict(f"task {task_id} has no result: it is {view.get('status')}")
    try:
        data = await c.blobs.read(view["result"])
    except BlobNotFoundError as exc:
        raise NotFound(f"the result of task {task_id} is no longer stored") from exc
    return Response(data, media_type=view.get("mime_type", "application/octet-stream"))


@router.delete("/v1/tasks/{task_id}", response_model=Cancelled, tags=["tasks"], responses={409: {}, 503: {}})
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
