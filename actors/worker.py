"""The worker: one attempt of one task — token, provider call, result blob, outcome event."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import ray.exceptions
import structlog

from actors.blobs import blob_store, task_blob
from actors.config import Config
from actors.keypool import Token
from actors.keypool_logic import CallFailure
from actors.logs import configure
from actors.providers.base import Failure, ImageRequest, Provider, ProviderError
from actors.telemetry import WorkerMetrics
from events.catalogue import (
    RUNNING,
    Event,
    TaskAttemptFailed,
    TaskLateOutcomeIgnored,
    TaskStarted,
    TaskSucceeded,
    TaskUpstreamThrottled,
)
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import EventStore, Expect

log = structlog.get_logger("genqueue.worker")

# How long a worker's first ping waits for the key pool to answer (it carries on without).
READY_TIMEOUT = 5.0
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """What a worker needs to run one attempt; built by the QueueActor from its state."""

    task_id: str
    attempt: int
    kind: str
    prompt: str
    inputs: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    resent: bool = False
    submitted_at: float = 0.0
    dispatched_at: float = 0.0
    order: float = 0.0  # the task's place in the queue: tokens go out in this order too


_QUOTA = {Failure.THROTTLED: "minute", Failure.QUOTA_DAY: "day", Failure.KEY_REJECTED: "key"}


def make_provider(config: Config) -> Provider:
    """The provider named in the config."""
    if config.provider.name == "gemini":
        from actors.providers.gemini import GeminiProvider

        return GeminiProvider(config.provider)
    from actors.providers.offline import OfflineProvider

    return OfflineProvider(config.provider)


class Worker:
    """Stateless between attempts; safe to send the same attempt twice."""

    def __init__(self, config: Config, index: int, keypool: Any) -> None:
        configure()
        self._config = config
        self._index = index
        self._keypool = keypool
        self._blobs = blob_store(config)
        self._provider = make_provider(config)
        self._provider.prepare(key for pool in config.pools for key in pool.keys)
        self._store: EventStore | None = None
        self._inflight: set[tuple[str, int]] = set()
        self._metrics = WorkerMetrics()
        self._ready = False

    def _events(self) -> EventStore:
        if self._store is None:
            self._store = RedisEventStore.from_url(self._config.redis.url, self._config.redis.namespace)
        return self._store

    async def node(self) -> str:
        """The id of the Ray node this worker runs on."""
        import ray

        node_id: str = ray.get_runtime_context().get_node_id()
        return node_id

    async def pid(self) -> int:
        """The actor's process id (tests watch it change across a restart)."""
        return os.getpid()

    async def ping(self) -> int:
        """Liveness: the worker's index.

        The first ping readies the worker for a burst: the provider's clients, the event
        store's connections and the route to the key pool. Each costs its first use tens to
        hundreds of milliseconds, which the first calls of a burst would otherwise wait for.
        """
        if not self._ready:
            await self._provider.start()
            await self._events().ping()
            with contextlib.suppress(TimeoutError, ray.exceptions.RayError):
                await asyncio.wait_for(self._keypool.pid.remote(), READY_TIMEOUT)
            self._ready = True
        return self._index

    async def run(self, spec: AttemptSpec) -> str:
        """Run one attempt to its outcome event; returns the outcome's type (or why it did nothing)."""
        key = (spec.task_id, spec.attempt)
        if key in self._inflight:
            return "duplicate"
        self._inflight.add(key)
        try:
            return await self._run(spec)
        finally:
            self._inflight.discard(key)

    async def _run(self, spec: AttemptSpec) -> str:
        store = self._events()
        bound = log.bind(task_id=spec.task_id, attempt=spec.attempt, worker=self._index)
        expect = {spec.task_id: Expect(RUNNING, spec.attempt)}
        if spec.resent:
            # Sent again after a QueueActor restart: skip it if it already ended, so a
            # finished attempt never spends another rate-limit token.
            view = await store.task_view(spec.task_id)
            if not view or view.get("status") != RUNNING or view.get("attempts") != str(spec.attempt):
                return "stale"
        try:
            request = await self._request(spec)
        except ProviderError as exc:
            outcome: Event = self._failed(spec, exc, "", time.time(), time.time())
            if await self._append(store, [outcome], expect) is None:
                return await self._late(store, spec, outcome.type)
            return outcome.type
        token: Token = await self._keypool.acquire.remote(spec.task_id, spec.attempt, spec.order)
        now = time.time()
        if not token.granted:
            refused = TaskUpstreamThrottled(
                task_id=spec.task_id,
                attempt=spec.attempt,
                pool="",
                key_id="",
                code=0,
                quota="none",
                retry_after=0.0,
                order=spec.order,
                reason=token.reason,
                at=now,
            )
            if await self._append(store, [refused], expect) is None:
                return await self._late(store, spec, refused.type)
            bound.info("no pool can serve; task back in its place", reason=token.reason)
            return refused.type
        pool, key_id = token.pool, token.key_id
        bound = bound.bind(pool=pool, key_id=key_id)
        # A token granted ahead starts its call when its place frees, milliseconds from now.
        begins = max(now, token.not_before)
        started = TaskStarted(
            task_id=spec.task_id,
            attempt=spec.attempt,
            pool=pool,
            key_id=key_id,
            waited=max(0.0, begins - spec.submitted_at) if spec.submitted_at else 0.0,
            at=begins,
        )
        # The call starts as soon as the token is in hand (the limiter counted it at the
        # grant); the started event is written meanwhile, and a refused one stops the call.
        call = asyncio.ensure_future(
            self._call(spec, request, pool, key_id, started.at, bound, token.not_before)
        )
        if await self._append(store, [started], expect) is None:
            call.cancel()
            return await self._late(store, spec, started.type)
        self._metrics.queue_wait.observe(started.waited)
        outcome = await call
        if isinstance(outcome, TaskSucceeded):
            self._metrics.call(pool, 200, outcome.elapsed)
        elif isinstance(outcome, TaskAttemptFailed):
            self._metrics.call(pool, outcome.code, outcome.elapsed)
        elif isinstance(outcome, TaskUpstreamThrottled):
            self._metrics.call(pool, outcome.code, max(0.0, outcome.at - started.at))
        if await self._append(store, [outcome], expect) is None:
            return await self._late(store, spec, outcome.type)
        bound.info("attempt ended", outcome=outcome.type)
        return outcome.type

    async def _request(self, spec: AttemptSpec) -> ImageRequest:
        """The provider request: the task's input images read from the blob store."""
        try:
            images = {
                role: await asyncio.to_thread(self._blobs.get, ref) for role, ref in spec.inputs.items()
            }
        except Exception as exc:
            raise ProviderError(f"input image unreadable: {type(exc).__name__}", retryable=True) from exc
        return ImageRequest(spec.task_id, spec.kind, spec.prompt, images, spec.options)

    def _failed(self, spec: AttemptSpec, exc: ProviderError, pool: str, t0: float, now: float) -> Event:
        return TaskAttemptFailed(
            task_id=spec.task_id,
            attempt=spec.attempt,
            error=exc.reason,
            retryable=exc.retryable,
            pool=pool,
            code=exc.code,
            elapsed=now - t0,
            at=now,
        )

    async def _call(
        self,
        spec: AttemptSpec,
        request: ImageRequest,
        pool: str,
        key_id: str,
        t0: float,
        bound: Any,
        not_before: float = 0.0,
    ) -> Event:
        def sent(at: float) -> None:
            self._keypool.sent.remote(spec.task_id, spec.attempt, at)

        try:
            result = await self._provider.generate(request, self._config.key_secret(key_id), sent, not_before)
            ext = _EXTENSIONS.get(result.mime_type, "bin")
            ref = task_blob(spec.task_id, f"result-{spec.attempt}.{ext}")
            await asyncio.to_thread(self._blobs.put, ref, result.data)
        except ProviderError as exc:
            now = time.time()
            bound.warning("attempt failed", error=exc.reason, failure=exc.failure.value, code=exc.code)
            if exc.failure in _QUOTA:
                refused = CallFailure(
                    key_id=key_id,
                    failure=exc.failure,
                    code=exc.code,
                    retry_after=exc.retry_after,
                    quota_id=exc.quota_id,
                    quota_value=exc.quota_value,
                    reason=exc.reason,
                )
                await self._keypool.report.remote(pool, refused)
                return TaskUpstreamThrottled(
                    task_id=spec.task_id,
                    attempt=spec.attempt,
                    pool=pool,
                    key_id=key_id,
                    code=exc.code,
                    quota=_QUOTA[exc.failure],
                    retry_after=exc.retry_after or 0.0,
                    order=spec.order,
                    reason=exc.reason,
                    at=time.time(),
                )
            return self._failed(spec, exc, pool, t0, now)
        except Exception as exc:  # a bug or a broken blob must not leave the attempt hanging
            bound.exception("attempt crashed")
            now = time.time()
            return TaskAttemptFailed(
                task_id=spec.task_id,
                attempt=spec.attempt,
                error=f"internal error: {type(exc).__name__}",
                retryable=True,
                pool=pool,
                elapsed=now - t0,
                at=now,
            )
        now = time.time()
        return TaskSucceeded(
            task_id=spec.task_id,
            attempt=spec.attempt,
            result=ref,
            mime_type=result.mime_type,
            elapsed=now - t0,
            held=now - spec.dispatched_at if spec.dispatched_at else 0.0,
            kind=spec.kind,
            pool=pool,
            at=now,
        )

    async def _append(
        self, store: EventStore, events: list[Event], expect: dict[str, Expect] | None
    ) -> list[str] | None:
        """Append, riding out a store outage for up to the lease: an outcome is never dropped early.

        Retrying is safe: the guard refuses a second copy once the first one landed.
        """
        deadline = time.monotonic() + self._config.queue.lease_seconds
        delay = 0.05
        while True:
            try:
                return await store.append(events, expect)
            except StoreUnavailableError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("event store unavailable; retrying append", error=str(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def _late(self, store: EventStore, spec: AttemptSpec, outcome: str) -> str:
        late = TaskLateOutcomeIgnored(
            task_id=spec.task_id, attempt=spec.attempt, outcome=outcome, at=time.time()
        )
        await self._append(store, [late], None)
        log.info("late outcome recorded", task_id=spec.task_id, attempt=spec.attempt, outcome=outcome)
        return late.type
