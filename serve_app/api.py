"""The HTTP API (FastAPI): submit writes `task.submitted`; every read comes from Redis read models."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import limits
import redis.asyncio as aioredis
import structlog
from fastapi import Depends, FastAPI, Header, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.types import Scope

from actors.blobs import BlobNotFoundError, blob_store, task_blob
from actors.config import Config, LimitsConfig
from actors.eta import eta_seconds
from actors.webhooks import task_body
from events.admission import Admission, Refusal
from events.catalogue import QUEUED, SUCCEEDED, TERMINAL, CreditsGranted, TaskSubmitted
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import QueueCounts
from serve_app import pages, problems
from serve_app.auth import ADMIN, SCRAPE_ROLES, USER, Caller, authenticate
from serve_app.bodylimit import BodyLimit
from serve_app.gate import Admitted, SubmitGate
from serve_app.images import ImageRejected, decode_image
from serve_app.metrics import read_figures, render
from serve_app.models import Cancelled, Grant, Granted, Me, SubmitTask, Submitted, TaskViewOut
from serve_app.pools import PoolView, read_pools
from serve_app.problems import (
    BadRequest,
    NotFound,
    PaymentRequired,
    TooManyRequests,
    Unavailable,
    Unprocessable,
)
from serve_app.watch import Hub, Stream
from serve_app.webhook_guard import webhook_for

Readiness = Callable[[], Awaitable[bool]]
# Asks the QueueActor to cancel a waiting task: "cancelled", "running" or "ended".
Canceller = Callable[[str], Awaitable[str]]
bearer = HTTPBearer(auto_error=False, description="A genqueue token, from `genqueue token create`.")
TaskId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="A task id.")]
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


log = structlog.get_logger("genqueue.api")

POOLS_FRESH_SECONDS = 0.2


class Context:
    """Per-replica state, made on first use inside the replica's event loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.blobs = blob_store(config)
        self._store: RedisEventStore | None = None
        self._hub: Hub | None = None
        self._pools: tuple[float, list[PoolView]] = (-math.inf, [])
        self._pools_read: asyncio.Future[list[PoolView]] | None = None
        self._limiter: MovingWindowRateLimiter | None = None
        self._rates = {
            USER: limits.parse(config.limits.user_submit_rate),
            "other": limits.parse(config.limits.service_submit_rate),
        }

    @property
    def limiter(self) -> MovingWindowRateLimiter:
        """The submit-rate limiter of this replica: a moving window per token in Redis."""
        if self._limiter is None:
            redis = self.config.redis
            # A bounded pool, as for the event store: a burst of submits shares a few
            # connections instead of overflowing the server's accept backlog.
            pool = aioredis.BlockingConnectionPool.from_url(redis.url, max_connections=32, timeout=10)
            storage = RedisStorage(
                "async+" + redis.url,
                implementation="redispy",
                key_prefix=f"genqueue:{redis.namespace}:rate",
                wrap_exceptions=True,
                connection_pool=pool,  # type: ignore[arg-type]  # typed as scalar options, passed through
            )
            self._limiter = MovingWindowRateLimiter(storage)
        return self._limiter

    async def warm(self) -> None:
        """Ready the replica for a burst before its first request.

        Opens as many connections as submits run at once, in the event store's pool and the
        rate limiter's, loads Pillow's image plugins and reads the pools' views. Otherwise
        the first submits of a burst pay for all of it (connections, lazy imports, package
        metadata lookups) while hundreds of other requests arrive, and the first images
        start later. A store that cannot be reached is no error here: submits then answer
        503 as they would anyway.
        """
        Image.init()
        width = self.config.server.submit_concurrency
        try:
            await asyncio.gather(*(self.store.ping() for _ in range(width)))
            await asyncio.gather(*(self.limiter.storage.check() for _ in range(width)))
            await self.recent_pools()
        except (StoreUnavailableError, RedisError, limits.errors.StorageError, OSError) as exc:
            log.warning("could not warm up the store connections", error=str(exc))

    async def check_rate(self, caller: Caller) -> None:
        """A 429 when the caller's token has used its submit rate (a moving window in Redis,
        shared by every replica)."""
        item = self._rates[USER] if caller.role == USER else self._rates["other"]
        key = caller.token_id or "open"
        try:
            if await self.limiter.hit(item, key):
                return
            stats = await self.limiter.get_window_stats(item, key)
        except limits.errors.StorageError as exc:
            raise Unavailable("the event store is unreachable; try again shortly") from exc
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(f"this token may submit {item}; try again in {wait} s", wait)

    async def admit(self, scope: Scope) -> Admitted:
        """A submit checked from its headers alone, before any body byte is read: the caller
        (kept in the request's state for the route), its submit rate, and its cap on submits
        in progress."""
        header = Headers(scope=scope).get("authorization") or None
        caller = await authenticate(self.store, header, self.config.auth.required)
        await self.check_rate(caller)
        scope.setdefault("state", {})["caller"] = caller
        lim = self.config.limits
        cap = lim.max_submits_per_token if caller.role == USER else lim.max_submits_per_service_token
        return Admitted(caller.token_id or "open", cap)

    def admission(self, kind: str) -> Admission:
        """What a submit of `kind` must pass."""
        credits, queue = self.config.credits, self.config.queue
        return Admission(
            price=credits.price(kind),
            default_grant=credits.default_grant if credits.enabled else 0,
            per_user_waiting=queue.per_user_waiting,
            max_waiting=queue.max_waiting,
        )

    def refused(self, refusal: Refusal, counts: QueueCounts, user_id: str) -> problems.ApiProblem:
        """The problem for a refused submit: 402 for credits, 429 with Retry-After for a full backlog."""
        if refusal.reason == "credits":
            return PaymentRequired(
                f"{user_id} has {refusal.balance} credit(s); this task costs {refusal.price}",
                balance=refusal.balance,
                price=refusal.price,
            )
        rate, _ = self.throughput(counts.stats)
        rate = max(rate, 1e-3)
        if refusal.reason == "queue_full":
            excess = counts.waiting - self.config.queue.max_waiting + 1
            wait = math.ceil(max(1, excess) / rate)
            detail = f"the queue holds {counts.waiting} waiting tasks, its limit"
        else:
            # One of the user's tasks starts about once per round of all waiting users.
            wait = math.ceil(counts.waiting / max(1, refusal.waiting) / rate)
            detail = f"{user_id} has {refusal.waiting} tasks waiting, the limit per user"
        wait = min(3600, max(1, wait))
        return TooManyRequests(f"{detail}; try again in about {wait} s", wait, waiting=refusal.waiting)

    async def recent_pools(self) -> list[PoolView]:
        """The pools' views, read at most every POOLS_FRESH_SECONDS: a burst of submits shares
        one read for its ETAs (and one read in flight) instead of two round trips each."""
        if time.monotonic() - self._pools[0] <= POOLS_FRESH_SECONDS:
            return self._pools[1]
        if self._pools_read is None or self._pools_read.done():
            self._pools_read = asyncio.ensure_future(self._read_pools())
        # Shielded: a caller that goes away does not cancel the read the others wait on.
        return await asyncio.shield(self._pools_read)

    async def _read_pools(self) -> list[PoolView]:
        views = await read_pools(self.store, self.config)
        self._pools = (time.monotonic(), views)
        return views

    @property
    def hub(self) -> Hub:
        """The replica's stream tailer for watchers."""
        if self._hub is None:
            self._hub = Hub(self.store)
        return self._hub

    @property
    def store(self) -> RedisEventStore:
        """The event store client of this replica."""
        if self._store is None:
            redis = self.config.redis
            self._store = RedisEventStore.from_url(
                redis.url, redis.namespace, max_connections=64, waitaof=redis.durability == "waitaof"
            )
        return self._store

    def throughput(self, stats: dict[str, float], pools: list[PoolView] | None = None) -> tuple[float, float]:
        """(tasks per second the configuration can sustain, mean call latency used for it).

        With the pools' views, their learned rates count and parked or keyless pools do not.
        """
        count = stats.get("elapsed_count", 0.0)
        latency = stats["elapsed_sum"] / count if count else max(self.config.provider.latency_seconds, 0.1)
        if pools is None:
            rate_limit = sum(p.rate for p in self.config.pools) / 60.0
        else:
            rate_limit = sum(v.rate for v in pools if v.state in ("ok", "cooling")) / 60.0
        return min(self.config.queue.slots / max(latency, 1e-3), rate_limit), latency


IDEMPOTENCY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"


def idempotency_key(body: SubmitTask, header: str | None) -> str:
    """The request's idempotency key from the body or the header; both must agree."""
    if body.idempotency_key and header and body.idempotency_key != header:
        raise BadRequest(
            "idempotency_key and the Idempotency-Key header differ",
            errors=[{"field": "idempotency_key", "message": "differs from the Idempotency-Key header"}],
        )
    return body.idempotency_key or header or ""


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
        raise problems.TooLarge(
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


async def discard_inputs(c: Context, task_id: str, written: asyncio.Future[None], ask_store: bool) -> None:
    """Remove the images a submit wrote for a task that was not accepted.

    Waits for the write first: it runs on in its thread even when the request was cancelled.
    With `ask_store` (the submit failed rather than being refused) the task is looked up,
    and its images stay if the store accepted it after all and only the answer was lost.
    """
    await asyncio.wait([written])
    if not written.cancelled():
        written.exception()  # a failed write is the submit's error, already raised
    if ask_store:
        try:
            if await c.store.task_view(task_id) is not None:
                return
        except (StoreUnavailableError, RedisError, OSError):
            pass  # the store cannot say: most likely nothing was accepted
    try:
        await asyncio.to_thread(c.blobs.delete_task, task_id)
    except Exception as exc:  # any backend's failure: the submit's own error is the one to raise
        log.warning("could not remove a refused submit's images", task_id=task_id, error=str(exc))


def authorization(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The Authorization header to authenticate: the bearer credentials, or what else was sent."""
    if credentials is not None:
        return f"Bearer {credentials.credentials}"
    return request.headers.get("authorization") or None  # not a bearer scheme: say so


async def get_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Caller:
    """The authenticated caller, or a 401; a 403 for a metrics token."""
    admitted = request.scope.get("state", {}).get("caller")
    if isinstance(admitted, Caller):  # a submit, authenticated from its headers by the gate
        return admitted
    ctx: Context = request.app.state.ctx
    return await authenticate(ctx.store, authorization(request, credentials), ctx.config.auth.required)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def admin(caller: CallerDep) -> Caller:
    """The caller, if it is an admin; a 403 otherwise."""
    caller.require(ADMIN)
    return caller


AdminDep = Annotated[Caller, Depends(admin)]


async def scraper(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Caller:
    """The caller of `GET /metrics`: a metrics or admin token; a 401 or 403 otherwise."""
    ctx: Context = request.app.state.ctx
    header = authorization(request, credentials)
    return await authenticate(ctx.store, header, ctx.config.auth.required, SCRAPE_ROLES)


ScraperDep = Annotated[Caller, Depends(scraper)]


async def existing_task(task_id: TaskId, request: Request, caller: CallerDep) -> dict[str, str]:
    """The task view, or a 404 before any response starts (a dependency, so streams can use
    it). Another user's task is a 404 too, never a 403: a user cannot learn it exists."""
    ctx: Context = request.app.state.ctx
    view = await ctx.store.task_view(task_id)
    if view is None or not caller.may_see(view.get("user_id", "")):
        raise NotFound(f"no task {task_id}")
    return view


# When a token holding all the streams it may is told to try again: streams end with their tasks.
STREAMS_RETRY_SECONDS = 10


async def open_stream(
    task_id: TaskId,
    request: Request,
    caller: CallerDep,
    _exists: Annotated[dict[str, str], Depends(existing_task)],
) -> AsyncIterator[Stream]:
    """The hub's stream of the task for the caller's token, held until the response ends; a 429
    before the response starts when the token holds all the streams it may on this replica."""
    ctx: Context = request.app.state.ctx
    lim = ctx.config.limits
    most = lim.max_streams_per_token if caller.role == USER else lim.max_streams_per_service_token
    if most > 0 and ctx.hub.streams_of(caller.token_id) >= most:
        raise TooManyRequests(
            f"this token has {most} task streams open, the most it may; "
            f"close one or try again in {STREAMS_RETRY_SECONDS} s",
            STREAMS_RETRY_SECONDS,
            streams=most,
        )
    # No await between the count and the registration: concurrent requests cannot both pass.
    with ctx.hub.watch(task_id, caller.token_id) as stream:
        yield stream


def parse_event_id(value: str | None) -> tuple[int, int | None]:
    """(task events seen, position) from a Last-Event-ID; (0, None) when absent or unreadable."""
    if not value:
        return 0, None
    seen, _, position = value.partition("-")
    try:
        return int(seen), (int(position) if position not in ("", "None") else None)
    except ValueError:
        return 0, None


async def get_ctx(request: Request) -> Context:
    """The replica's context (a FastAPI dependency; async, so it runs without a thread hop)."""
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(get_ctx)]


def create_app(
    config: Config, readiness: Readiness | None = None, canceller: Canceller | None = None
) -> FastAPI:
    """The FastAPI application for one genqueue namespace."""
    ctx = Context(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ctx.warm()
        yield

    app = FastAPI(
        title="genqueue",
        version="1",
        summary="A queue for AI image generation that absorbs bursts and never overruns upstream quotas.",
        lifespan=lifespan,
        # /docs is served from local files by `pages.install`; ReDoc would need a CDN.
        docs_url=None,
        redoc_url=None,
        # Starlette builds a trailing-slash redirect from the Host header, which a client
        # chooses: no redirect at all, a path is found as written or is a 404.
        redirect_slashes=False,
    )
    problems.install(app)
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_body_bytes)
    # Before the body limit and the app: a submit is admitted from its headers before a byte
    # of its body is read.
    app.add_middleware(
        SubmitGate,
        limit=config.server.submit_concurrency,
        admit=ctx.admit,
        read_seconds=config.limits.body_read_seconds,
        max_body_bytes=config.limits.max_body_bytes,
    )
    # Pillow's own decompression-bomb limit, for anything in this process that opens images.
    Image.MAX_IMAGE_PIXELS = config.limits.max_image_pixels
    app.state.ctx = ctx
    pages.install(app)

    async def eta(c: Context, position: int | None, counts: QueueCounts) -> float | None:
        """Seconds until the task at `position` starts, simulated from slots, latency and windows."""
        if position is None:
            return None
        _, latency = c.throughput(counts.stats)
        held = counts.stats.get("held_count", 0.0)
        if held:
            # A slot is held from dispatch to outcome: the call, and the token wait and the
            # hand-offs around it, which a busy machine stretches.
            latency = max(latency, counts.stats["held_sum"] / held)
        now = time.time()
        windows = [view.eta_window() for view in await c.recent_pools()]
        seconds = eta_seconds(position, now, c.config.queue.slots, counts.running, latency, windows)
        return round(max(0.0, seconds), 1) if math.isfinite(seconds) else None

    @app.post("/v1/tasks", status_code=202, response_model=Submitted, tags=["tasks"])
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
        429 with Retry-After.
        """
        user_id = caller.acts_for(body.user_id)
        key = idempotency_key(body, idempotency_header)
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
        blobs = {refs[role]: data for role, (data, _) in decoded.items()}
        written = asyncio.ensure_future(asyncio.to_thread(c.blobs.put_many, blobs))
        try:
            await asyncio.shield(written)
            receipt = await c.store.submit(event, c.admission(body.kind))
            if receipt.refused is not None:
                raise c.refused(receipt.refused, receipt.counts, user_id)
            if receipt.duplicate_of is not None and receipt.duplicate_digest != event.digest:
                raise problems.Conflict(
                    f"idempotency key {key!r} was used for a different request (task {receipt.duplicate_of})",
                    errors=[{"field": "idempotency_key", "message": "used for a different request"}],
                )
        except BaseException as exc:
            # Nothing a refused or failed submit wrote may outlive it; shielded, so that a
            # cancelled request still removes its images.
            failed = not isinstance(exc, problems.ApiProblem)
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
            eta_seconds=await eta(c, position, receipt.counts),
            balance=receipt.balance if c.config.credits.enabled else None,
        )

    async def submitted_view(c: Context, task_id: str, response: Response) -> Submitted:
        view = await load_view(c, task_id)
        status = view.get("status", QUEUED)
        position = await c.store.position(task_id) if status == QUEUED else None
        response.headers["Location"] = f"/v1/tasks/{task_id}"
        counts = await c.store.counts()
        return Submitted(
            task_id=task_id, status=status, position=position, eta_seconds=await eta(c, position, counts)
        )

    async def load_view(c: Context, task_id: str) -> dict[str, str]:
        view = await c.store.task_view(task_id)
        if view is None:
            raise NotFound(f"no task {task_id}")
        return view

    @app.get("/v1/tasks/{task_id}", response_model=TaskViewOut, tags=["tasks"])
    async def get_task(task_id: TaskId, c: Ctx, caller: CallerDep) -> TaskViewOut:
        """The task view: status, position, ETA, attempts, timestamps, error and result URL."""
        view, position = await c.store.task_view_and_position(task_id)
        if view is None or not caller.may_see(view.get("user_id", "")):
            raise NotFound(f"no task {task_id}")
        return await task_view_out(c, task_id, view, position)

    @app.get("/v1/tasks/{task_id}/watch", response_class=EventSourceResponse, tags=["tasks"])
    async def watch_task(
        task_id: TaskId,
        c: Ctx,
        stream: Annotated[Stream, Depends(open_stream)],
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
    ) -> AsyncIterable[ServerSentEvent]:
        """Server-Sent Events: the task view after each state change and each move in the queue.

        Message ids are `<events seen>-<position>`; a reconnect with `Last-Event-ID` gets only
        what changed since. The stream ends after the terminal state, or when its token is
        revoked. A token holding `[limits] max_streams_per_token` streams gets a 429.
        """
        seen, last_position = parse_event_id(last_event_id)
        while not stream.revoked:
            stream.wake.clear()
            view, position = await c.store.task_view_and_position(task_id)
            if view is None:
                return
            count = int(view.get("events", 0))
            out = await task_view_out(c, task_id, view, position)
            if count != seen or out.position != last_position:
                seen, last_position = count, out.position
                yield ServerSentEvent(data=out.model_dump(), event="task", id=f"{seen}-{last_position}")
            if out.status in TERMINAL:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wake.wait(), 15)

    async def task_view_out(
        c: Context, task_id: str, view: dict[str, str], position: int | None
    ) -> TaskViewOut:
        body = task_body(task_id, view)  # the same mapping the completion webhooks send
        status = body["status"] or QUEUED
        position = position if status == QUEUED else None
        eta_s = await eta(c, position, await c.store.counts()) if position is not None else None
        return TaskViewOut(**{**body, "status": status, "position": position, "eta_seconds": eta_s})

    @app.get("/v1/tasks/{task_id}/events", tags=["tasks"])
    async def task_events(
        task_id: TaskId, c: Ctx, _view: Annotated[dict[str, str], Depends(existing_task)]
    ) -> dict[str, Any]:
        """The task's audit trail: its events in stream order."""
        return {"task_id": task_id, "events": await c.store.task_log(task_id)}

    @app.get(
        "/v1/tasks/{task_id}/result",
        tags=["tasks"],
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}},
    )
    async def task_result(
        task_id: TaskId, c: Ctx, view: Annotated[dict[str, str], Depends(existing_task)]
    ) -> Response:
        """The generated image."""
        if view.get("status") != SUCCEEDED:
            raise problems.Conflict(f"task {task_id} has no result: it is {view.get('status')}")
        try:
            data = await asyncio.to_thread(c.blobs.get, view["result"])
        except BlobNotFoundError as exc:
            raise NotFound(f"the result of task {task_id} is no longer stored") from exc
        return Response(data, media_type=view.get("mime_type", "application/octet-stream"))

    @app.delete("/v1/tasks/{task_id}", response_model=Cancelled, tags=["tasks"], responses={409: {}, 503: {}})
    async def cancel_task(
        task_id: TaskId, c: Ctx, view: Annotated[dict[str, str], Depends(existing_task)]
    ) -> Cancelled:
        """Cancel a waiting task and refund its credits; a running or ended task is a 409."""
        status = view.get("status", QUEUED)
        if status != QUEUED:
            raise problems.Conflict(f"task {task_id} is {status}; only a queued task can be cancelled")
        if canceller is None:
            raise Unavailable("the queue is not running here; try again shortly")
        outcome = await canceller(task_id)
        if outcome != "cancelled":
            now = await load_view(c, task_id)
            raise problems.Conflict(
                f"task {task_id} is {now.get('status', outcome)}; it can no longer be cancelled"
            )
        after = await load_view(c, task_id)
        return Cancelled(
            task_id=task_id, status=after.get("status", ""), refunded=int(after.get("refunded", 0))
        )

    @app.get("/v1/me", response_model=Me, tags=["credits"])
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
        """The caller's balance and its newest ledger entries."""
        who = caller.acts_for(user_id)
        totals, ledger = await c.store.user(who)
        return Me(
            user_id=who,
            role=caller.role,
            balance=int(totals.get("balance", 0)),
            granted=int(totals.get("granted", 0)),
            charged=int(totals.get("charged", 0)),
            refunded=int(totals.get("refunded", 0)),
            ledger=ledger,
        )

    @app.post("/v1/admin/credits", response_model=Granted, tags=["credits"])
    async def grant(body: Grant, c: Ctx, caller: AdminDep) -> Granted:
        """Add credits to a user's balance (admin)."""
        event = CreditsGranted(
            user_id=body.user_id, amount=body.amount, reason=body.reason, by=caller.token_id, at=time.time()
        )
        await c.store.append([event])
        totals, _ = await c.store.user(body.user_id, entries=0)
        return Granted(user_id=body.user_id, amount=body.amount, balance=int(totals.get("balance", 0)))

    @app.get("/v1/queue", tags=["queue"])
    async def queue(c: Ctx, _admin: AdminDep) -> dict[str, Any]:
        """Waiting, running, slots, throughput and each pool's window budget."""
        counts = await c.store.counts()
        views = await read_pools(c.store, c.config)
        rate, latency = c.throughput(counts.stats, views)
        stats = counts.stats
        return {
            "waiting": counts.waiting,
            "running": counts.running,
            "slots": c.config.queue.slots,
            "submitted": int(stats.get("submitted", 0)),
            "succeeded": int(stats.get("succeeded", 0)),
            "failed": int(stats.get("failed", 0)),
            "cancelled": int(stats.get("cancelled", 0)),
            "mean_latency_seconds": round(latency, 3),
            "throughput_bound_per_second": round(rate, 3),
            "throttled": int(stats.get("throttled", 0)),
            "pools": [{**view.as_json(), "calls": int(stats.get(f"calls:{view.name}", 0))} for view in views],
            "alerts": await c.store.alerts(),
            "recent_failures": await c.store.recent_failures(),
        }

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics(c: Ctx, _scraper: ScraperDep) -> PlainTextResponse:
        """Prometheus text: queue, task totals, upstream calls, wait and processing histograms, pools
        (a metrics or admin token)."""
        figures = await read_figures(c.store, c.config)
        return PlainTextResponse(render(figures, c.config), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(c: Ctx) -> JSONResponse:
        """Readiness: the event store answers and the actors are alive."""
        store_ok = await c.store.ping()
        actors_ok = await readiness() if (readiness is not None and store_ok) else store_ok
        ok = store_ok and actors_ok
        body = {"status": "ready" if ok else "not ready", "store": store_ok, "actors": actors_ok}
        if ok:
            return JSONResponse(body)
        return problems.problem(
            503,
            "Not ready",
            f"store reachable: {store_ok}; actors alive: {actors_ok}",
            "/readyz",
            {"Retry-After": "2"},
        )

    return app
