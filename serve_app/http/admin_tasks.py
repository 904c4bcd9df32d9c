"""The operator's actions on tasks and intake: retry a failed task, pause and resume intake.

A failed task is retried as a new task, linked to it by the idempotency key
`retry:<failed task id>`. Its life ended with `task.failed` and its refund, and a task ends
exactly once: giving the failed one a second ending (and a second charge under the same id)
would break the rules every store, the audit and the completion webhooks rely on. So the
failed task and its refund stand, and the new one is charged to the same user and refunded
if it fails, as any task is. A second retry of the same task (a double click) names the
first retry while the idempotency key lives (24 h).

The cancel of any task by an admin is `DELETE /v1/tasks/{id}`.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response

from actors.blobs import BlobNotFoundError, task_blob
from events.catalogue import FAILED, QUEUED, IntakePaused, IntakeResumed, TaskSubmitted
from events.codec import decode
from events.task_ids import new_task_id
from serve_app.http.archived import task_log
from serve_app.http.auth import Caller
from serve_app.http.context import Context
from serve_app.http.deps import AdminDep, Ctx, TaskId
from serve_app.http.models import PauseIntake, Retried
from serve_app.http.ops_figures import intake_json
from serve_app.http.problem_docs import responses
from serve_app.http.problems import Conflict, NotFound, PaymentRequired, TooManyRequests, Unavailable
from serve_app.http.tasks import enqueue

router = APIRouter()


def retry_key(task_id: str) -> str:
    """The idempotency key that links a retry to the failed task."""
    return f"retry:{task_id}"


async def submitted_event(c: Context, task_id: str) -> TaskSubmitted:
    """The task's `task.submitted`, from its audit trail."""
    for entry in await task_log(c, task_id):  # its submit read from the archive once trimmed
        if entry.get("type") == TaskSubmitted.type:
            fields = {"type": entry["type"], "v": str(entry["v"]), "data": json.dumps(entry["data"])}
            event = decode(fields)
            if isinstance(event, TaskSubmitted):
                return event
    raise NotFound(f"no task {task_id}")


async def copied_inputs(c: Context, failed: TaskSubmitted, task_id: str) -> dict[str, bytes]:
    """The failed task's input images under the new task's references; a 409 once they are gone."""
    blobs = {}
    for ref in failed.inputs.values():
        try:
            data = await c.blobs.read(ref)
        except BlobNotFoundError as exc:
            raise Conflict(
                f"the input images of task {failed.task_id} are no longer stored; submit it again"
            ) from exc
        blobs[task_blob(task_id, ref.rsplit("/", 1)[-1])] = data
    return blobs


def retry_event(failed: TaskSubmitted, task_id: str, at: float) -> TaskSubmitted:
    """The new task: the failed one's user, kind, prompt, options and token (so it is in that
    token's list), its own copies of the images, and no webhook (whoever receives them knows
    only the failed task)."""
    key = retry_key(failed.task_id)
    return TaskSubmitted(
        task_id=task_id,
        user_id=failed.user_id,
        kind=failed.kind,
        prompt=failed.prompt,
        inputs={role: task_blob(task_id, ref.rsplit("/", 1)[-1]) for role, ref in failed.inputs.items()},
        options=dict(failed.options),
        idempotency_key=key,
        digest=hashlib.sha256(key.encode()).hexdigest(),
        token_id=failed.token_id,
        max_price=failed.max_price,
        lane=failed.lane,
        at=at,
    )


@router.post(
    "/v1/admin/tasks/{task_id}/retry",
    status_code=202,
    response_model=Retried,
    tags=["ops"],
    responses=responses(PaymentRequired, Conflict, TooManyRequests, Unavailable),
)
async def retry_task(task_id: TaskId, c: Ctx, caller: AdminDep, response: Response) -> Retried:
    """Submit a failed task again as a new task (admin), charged to its user like any submit.

    A 409 unless the task failed, or once its input images are gone; 402, 429 and 503 as for
    `POST /v1/tasks`. A second retry of the same task answers the first (`Idempotent-Replayed`).
    """
    view = await c.store.task_view(task_id)
    if view is None:
        raise NotFound(f"no task {task_id}")
    if view.get("status") != FAILED:
        raise Conflict(f"task {task_id} is {view.get('status', QUEUED)}; only a failed task can be retried")
    failed = await submitted_event(c, task_id)
    new_id = new_task_id()
    event = retry_event(failed, new_id, time.time())
    accepted = await enqueue(c, event, await copied_inputs(c, failed, new_id), caller, response)
    return Retried(**accepted.model_dump(), retry_of=task_id)


def operator(caller: Caller) -> str:
    """Who an intake event names: the admin's user id, else its token id."""
    return caller.user_id or caller.token_id


@router.post("/v1/admin/intake/pause", tags=["ops"])
async def pause_intake(
    c: Ctx, caller: AdminDep, body: Annotated[PauseIntake | None, Body()] = None
) -> dict[str, Any]:
    """Pause intake (admin): every submit is a 503 with Retry-After and nothing is charged, until
    resumed; queued tasks keep running. Kept in the event stream, so a restart keeps it."""
    wanted = body or PauseIntake()
    now = await c.store.intake()
    if not (now.paused and now.reason == wanted.reason and now.retry_after == wanted.retry_after_seconds):
        paused = IntakePaused(
            reason=wanted.reason, retry_after=wanted.retry_after_seconds, by=operator(caller), at=time.time()
        )
        await c.store.append([paused])
    return intake_json(await c.store.intake())


@router.post("/v1/admin/intake/resume", tags=["ops"])
async def resume_intake(c: Ctx, caller: AdminDep) -> dict[str, Any]:
    """Accept submits again (admin); nothing happens when intake is not paused."""
    if (await c.store.intake()).paused:
        await c.store.append([IntakeResumed(by=operator(caller), at=time.time())])
    return intake_json(await c.store.intake())
