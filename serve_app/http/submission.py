"""A submit's request checked, keyed and made into its event before it is queued, and its images
removed if it is not."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError

from actors.blobs import task_blob
from actors.config import LimitsConfig
from events.catalogue import TaskSubmitted
from events.errors import StoreUnavailableError
from serve_app.http.auth import Caller
from serve_app.http.context import Context
from serve_app.http.images import ImageRejected, decode_image
from serve_app.http.models import SubmitTask
from serve_app.http.problems import BadRequest, Conflict, TooLarge, Unprocessable
from serve_app.http.webhook_guard import webhook_for

IDEMPOTENCY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"

log = structlog.get_logger("genqueue.api")

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked submit: its task.submitted event and its input images by blob reference."""

    event: TaskSubmitted
    blobs: dict[str, bytes]


async def prepare(c: Context, body: SubmitTask, caller: Caller, header: str | None = None) -> Prepared:
    """The event and images of `body` submitted by `caller`, keyed by the body's idempotency
    key or the Idempotency-Key `header`; a 400, 403, 413 or 422 problem for a request that
    cannot be a task."""
    user_id = caller.acts_for(body.user_id)
    key = idempotency_key(body, header)
    decoded = check_request(body, c.config.limits)
    webhook_url = await webhook_for(body.webhook_url, caller, c.config.webhooks)
    task_id = uuid.uuid4().hex
    refs = {role: task_blob(task_id, f"{role}.{_EXT[mime]}") for role, (_, mime) in decoded.items()}
    event = TaskSubmitted(
        task_id=task_id,
        user_id=user_id,
        kind=body.kind,
        prompt=body.prompt,
        inputs=refs,
        options=body.options.model_dump(exclude_none=True),
        idempotency_key=key,
        digest=request_digest(body) if key else "",
        webhook_url=webhook_url,
        token_id=caller.token_id,
        at=time.time(),
    )
    return Prepared(event, {refs[role]: data for role, (data, _) in decoded.items()})


def idempotency_key(body: SubmitTask, header: str | None) -> str:
    """The request's idempotency key from the body or the header; both must agree."""
    if body.idempotency_key and header and body.idempotency_key != header:
        raise BadRequest(
            "idempotency_key and the Idempotency-Key header differ",
            errors=[{"field": "idempotency_key", "message": "differs from the Idempotency-Key header"}],
        )
    return body.idempotency_key or header or ""


def key_conflict(key: str, first: str) -> Conflict:
    """The 409 for an idempotency key that names task `first`, of a different request."""
    return Conflict(
        f"idempotency key {key!r} was used for a different request (task {first})",
        errors=[{"field": "idempotency_key", "message": "used for a different request"}],
    )


def request_digest(body: SubmitTask) -> str:
    """A digest of what the request asks for, to tell a repeat from a different request."""
    canonical = json.dumps(body.model_dump(mode="json", exclude={"idempotency_key"}), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_request(body: SubmitTask, limits: LimitsConfig) -> dict[str, tuple[bytes, str]]:
    """The decoded input images by role, or a 422 naming the field at fault."""
    if len(body.prompt) > limits.max_prompt_chars:
        raise Unprocessable(
            f"prompt is {len(body.prompt)} characters, the limit is {limits.max_prompt_chars}",
            errors=[{"field": "prompt", "message": "too long"}],
        )
    size, largest = body.fields_bytes()
    if size > limits.max_fields_bytes:
        raise TooLarge(
            f"the request's fields other than images are {size} bytes as JSON, "
            f"the limit is {limits.max_fields_bytes} ([limits] max_fields_bytes)",
            errors=[{"field": largest, "message": "the largest field of a request over max_fields_bytes"}],
        )
    wanted = {"person": body.images.person}
    if body.kind == "fitting":
        if body.images.garment is None:
            raise Unprocessable(
                "fitting needs images.garment", errors=[{"field": "images.garment", "message": "required"}]
            )
        wanted["garment"] = body.images.garment
    elif body.images.garment is not None:
        raise Unprocessable(
            "photography takes only images.person",
            errors=[{"field": "images.garment", "message": "not allowed for photography"}],
        )
    decoded: dict[str, tuple[bytes, str]] = {}
    for role, text in wanted.items():
        try:
            decoded[role] = decode_image(
                f"images.{role}", text, limits.max_image_bytes, limits.max_image_pixels, limits.max_image_side
            )
        except ImageRejected as exc:
            raise Unprocessable(str(exc), errors=[{"field": f"images.{role}", "message": str(exc)}]) from exc
    return decoded


async def discard_inputs(ctx: Context, task_id: str, written: asyncio.Future[None], ask_store: bool) -> None:
    """Remove the images a submit wrote for a task that was not accepted (see `discard_many`)."""
    await discard_many(ctx, [task_id], written, ask_store)


async def discard_many(
    ctx: Context, task_ids: Sequence[str], written: asyncio.Future[None], ask_store: bool
) -> None:
    """Remove the images written for tasks that were not accepted, in one thread hop.

    Waits for the write first: it runs on in its thread even when the request was cancelled.
    With `ask_store` (the submit failed rather than being refused) each task is looked up,
    and its images stay if the store accepted it after all and only the answer was lost.
    """
    await asyncio.wait([written])
    if not written.cancelled():
        written.exception()  # a failed write is the submit's error, already raised
    doomed = list(task_ids)
    if ask_store:
        # When the store cannot say, most likely nothing was accepted.
        with contextlib.suppress(StoreUnavailableError, RedisError, OSError):
            doomed = [t for t in doomed if await ctx.store.task_view(t) is None]
    if doomed:
        await asyncio.to_thread(_delete_tasks, ctx, doomed)


def _delete_tasks(ctx: Context, task_ids: list[str]) -> None:
    for task_id in task_ids:
        try:
            ctx.blobs.delete_task(task_id)
        except Exception as exc:  # any backend's failure: the submit's own error is the one to raise
            log.warning("could not remove a refused submit's images", task_id=task_id, error=str(exc))
