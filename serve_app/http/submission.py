"""A submit's request checked, keyed and made into its event before it is queued, and its images
removed if it is not."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError

from actors.blobs import task_blob
from actors.config import LimitsConfig
from events.catalogue import TaskSubmitted
from events.errors import StoreUnavailableError
from events.task_ids import new_task_id
from serve_app.http.admission import check_max_price, lane_of
from serve_app.http.auth import Caller
from serve_app.http.context import Context
from serve_app.http.deadlines import REFUSE_LATE, deadline_seconds, late
from serve_app.http.images import ImageRejected, check_image, decode_image
from serve_app.http.models import ImageUrl, SubmitTask
from serve_app.http.problems import BadRequest, Conflict, DeadlineUnreachable, TooLarge, Unprocessable
from serve_app.http.webhook_guard import webhook_for

IDEMPOTENCY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"

log = structlog.get_logger("genqueue.api")

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

# Images that passed their checks in one request, by the text or bytes they came as.
Checked = dict[str | bytes, tuple[bytes, str]]

# Gets the bytes behind image URLs by role (`fetch.Fetcher.fetch_all`); a 422 for any that fails.
Fetch = Callable[[Mapping[str, str]], Awaitable[dict[str, bytes]]]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked submit: its task.submitted event, its input images by blob reference, and its
    deadline as asked for (seconds from the submit; None: none) with what to do if it is late."""

    event: TaskSubmitted
    blobs: dict[str, bytes]
    deadline_seconds: float | None = None
    if_late: str = REFUSE_LATE


async def prepare(
    c: Context,
    body: SubmitTask,
    caller: Caller,
    header: str | None = None,
    *,
    uploads: Mapping[str, bytes] | None = None,
    fetch: Fetch | None = None,
    cancel_after: str | None = None,
    checked: Checked | None = None,
) -> Prepared:
    """The event and images of `body` submitted by `caller`, keyed by the body's idempotency
    key or the Idempotency-Key `header`, with the deadline of the body's `deadline_seconds` or
    the `cancel_after` header (`deadlines.deadline_seconds`); a 400, 403, 413 or 422 problem for
    a request that cannot be a task.

    Each image is base64 in `body`, bytes in `uploads` (a multipart submit's file parts, by
    role), or a URL in `body` that `fetch` gets once every other check has passed (without
    `fetch`, as in a batch, a 422). An image already in `checked` (the same text or bytes,
    earlier in the same request) is not checked again.
    """
    user_id = caller.acts_for(body.user_id)
    key = idempotency_key(body, header)
    seconds = deadline_seconds(body.deadline_seconds, cancel_after)
    check_max_price(c.config, body.kind, body.max_price)
    lane = lane_of(c.config, caller, body.lane)
    limits = c.config.limits
    wanted = {role: (uploads or {}).get(role, source) for role, source in check_fields(body, limits).items()}
    decoded = check_images({r: s for r, s in wanted.items() if not isinstance(s, ImageUrl)}, limits, checked)
    webhook_url = await webhook_for(body.webhook_url, caller, c.config.webhooks)
    urls = {role: source.url for role, source in wanted.items() if isinstance(source, ImageUrl)}
    fetched = await fetched_images(urls, fetch)
    decoded.update(check_images(fetched, limits))
    decoded = {role: decoded[role] for role in wanted}  # in the roles' order
    task_id = new_task_id()  # time-ordered: its time finds the task in the archive
    refs = {role: task_blob(task_id, f"{role}.{_EXT[mime]}") for role, (_, mime) in decoded.items()}
    at = time.time()
    event = TaskSubmitted(
        task_id=task_id,
        user_id=user_id,
        kind=body.kind,
        prompt=body.prompt,
        inputs=refs,
        options=body.options.model_dump(exclude_none=True),
        idempotency_key=key,
        digest=request_digest(body, {**(uploads or {}), **fetched}, seconds) if key else "",
        webhook_url=webhook_url,
        token_id=caller.token_id,
        deadline=at + seconds if seconds is not None else 0.0,
        max_price=body.max_price or 0,
        lane=lane,
        at=at,
    )
    blobs = {refs[role]: data for role, (data, _) in decoded.items()}
    return Prepared(event, blobs, seconds, body.if_late)


async def refuse_if_late(c: Context, prepared: Prepared) -> None:
    """The 409 `deadline-unreachable` for a submit whose ETA at the place it would take misses
    its deadline (unless `if_late` is "accept"), before anything is written or charged."""
    (problem,) = await late_submits(c, [prepared])
    if problem is not None:
        raise problem


async def late_submits(c: Context, ready: Sequence[Prepared]) -> list[DeadlineUnreachable | None]:
    """For prepared submits in request order, the 409 of each whose deadline its ETA would miss
    (`deadlines.late`); None for the others."""
    asked = [(p.event.user_id, p.event.idempotency_key, p.deadline_seconds, p.if_late) for p in ready]
    prices = [(p.event.kind, p.event.max_price or None) for p in ready]
    return await late(c, asked, [p.event.lane for p in ready], prices)


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


def request_digest(
    body: SubmitTask, given: Mapping[str, bytes] | None = None, deadline: float | None = None
) -> str:
    """A digest of what the request asks for, to tell a repeat from a different request: its
    fields and images, each image `given` as bytes (uploaded or fetched) by their SHA-256, and
    its `deadline` in seconds (from the body or the Cancel-After header alike). A request
    without a deadline or a `max_price` has the digest it had before either was taken."""
    skipped = {"idempotency_key", "deadline_seconds", "if_late", "max_price", "lane"}
    asked = body.model_dump(mode="json", exclude=skipped)
    if deadline is not None:
        asked.update(deadline_seconds=deadline, if_late=body.if_late)
    if body.max_price is not None:
        asked["max_price"] = body.max_price
    if body.lane is not None:
        asked["lane"] = body.lane
    for role, data in (given or {}).items():
        asked["images"][role] = {"sha256": hashlib.sha256(data).hexdigest()}
    canonical = json.dumps(asked, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def fetched_images(urls: Mapping[str, str], fetch: Fetch | None) -> dict[str, bytes]:
    """The bytes behind each role's URL, by `fetch`; a 422 when there is none to fetch them."""
    if not urls:
        return {}
    if fetch is None:
        errors = [
            {
                "field": f"images.{role}",
                "message": "an image URL is fetched by POST /v1/tasks only; send base64",
            }
            for role in urls
        ]
        raise Unprocessable("a batch takes its images as base64, not as URLs", errors=errors)
    return await fetch(urls)


OVER_FIELDS = "the largest field of a request over max_fields_bytes"


def check_fields(body: SubmitTask, limits: LimitsConfig) -> dict[str, str | ImageUrl]:
    """The input images the task's kind takes, by role, as sent; a 413 or 422 naming the
    field at fault."""
    if len(body.prompt) > limits.max_prompt_chars:
        raise Unprocessable(
            f"prompt is {len(body.prompt)} characters, the limit is {limits.max_prompt_chars}",
            errors=[{"field": "prompt", "message": "too long"}],
        )
    size = body.fields_bytes()
    if size > limits.max_fields_bytes:
        raise TooLarge(
            f"the request's fields other than images are {size} bytes as JSON, "
            f"the limit is {limits.max_fields_bytes} ([limits] max_fields_bytes)",
            errors=[{"field": body.largest_field(), "message": OVER_FIELDS}],
        )
    wanted: dict[str, str | ImageUrl] = {"person": body.images.person}
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
    return wanted


def check_images(
    images: Mapping[str, str | bytes], limits: LimitsConfig, checked: Checked | None = None
) -> dict[str, tuple[bytes, str]]:
    """Each image (base64, or bytes) and its mime type by role, or a 422 naming the field at fault.

    `checked` holds the images that passed so far in one request, by their text or bytes: one
    sent again (a batch's items styling the same selfie) is taken from it, not decoded again.
    """
    bounds = (limits.max_image_bytes, limits.max_image_pixels, limits.max_image_side)
    decoded: dict[str, tuple[bytes, str]] = {}
    seen: Checked = {} if checked is None else checked
    for role, image in images.items():
        field = f"images.{role}"
        if (known := seen.get(image)) is not None:
            decoded[role] = known
            continue
        try:
            if isinstance(image, bytes):
                decoded[role] = seen[image] = check_image(field, image, *bounds)
            else:
                decoded[role] = seen[image] = decode_image(field, image, *bounds)
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
