"""The worker: one attempt of one task — token, provider call, result blob, outcome event."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import ray.exceptions
import structlog

from actors.blobs import blob_store, task_blob
from actors.config import Config, Route, route_of
from actors.logs import configure
from actors.messages import AttemptSpec, Token
from actors.providers.base import ImageRequest, Provider, ProviderError
from actors.telemetry import WorkerMetrics
from actors.worker.batching import Appender, SendReports
from actors.worker.decide import (
    Crashed,
    Generated,
    NoPool,
    Outcome,
    Refused,
    Superseded,
    Unreadable,
    expired,
    is_stale,
    outcome,
    report,
    settled,
    started,
    too_late,
)
from events.catalogue import (
    RUNNING,
    Event,
    TaskAttemptFailed,
    TaskExpired,
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
        self._secrets = config.secrets_by_key()  # looked up once, not across the pools per call
        self._store: EventStore | None = None
        self._inflight: set[tuple[str, int]] = set()
        self._metrics = WorkerMetrics()
        self._ready = False
        self._appender: Appender | None = None
        self._sends: SendReports | None = None
        # The attempts started, held until they end (the loop keeps only weak refs).
        self._running: set[asyncio.Task[str]] = set()
        self._calls: Counter[str] = Counter()  # calls received per method, and attempts sent with them

    def _events(self) -> EventStore:
        if self._store is None:
            self._store = RedisEventStore.from_url(self._config.redis.url, self._config.redis.namespace)
        return self._store

    async def node(self) -> str:
        """The id of the Ray node this worker runs on."""
        import ray

        node_id: str = ray.get_runtime_context().get_node_id()
        return node_id

    async def calls(self) -> dict[str, int]:
        """How often `run_granted` and `run_many` were called since the start, and how many
        attempts they carried."""
        return dict(self._calls)

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
            with contextlib.suppress(StoreUnavailableError):
                await self._events().load_scripts()
            with contextlib.suppress(TimeoutError, ray.exceptions.RayError):
                await asyncio.wait_for(self._keypool.pid.remote(), READY_TIMEOUT)
            self._ready = True
        return self._index

    async def run_granted(self, granted: list[tuple[AttemptSpec, Token]]) -> int:
        """Start attempts with the key pool's answers (a token or a refusal) as it hands them on
        (`KeyPool.hand_many`), and return at once: how many started (an attempt this worker
        already runs is not started twice). Each runs to its outcome event."""
        if granted:  # not the key pool's call that opens its route to this worker
            self._calls["run_granted"] += 1
        return self._start(granted)

    async def run_many(self, specs: list[AttemptSpec]) -> int:
        """Start attempts sent straight from the QueueActor, with the tokens it took for them
        (`tokens_per_round`); as `run_granted`."""
        self._calls["run_many"] += 1
        return self._start(
            [(spec, Token(spec.pool, spec.key_id, not_before=spec.not_before)) for spec in specs]
        )

    def _start(self, granted: list[tuple[AttemptSpec, Token]]) -> int:
        self._calls["attempts"] += len(granted)
        started = 0
        for spec, token in granted:
            if (spec.task_id, spec.attempt) in self._inflight:
                continue
            task = asyncio.ensure_future(self.run(spec, token))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            started += 1
        return started

    async def run(self, spec: AttemptSpec, token: Token) -> str:
        """Run one attempt with the key pool's answer for it (a token or a refusal) to its
        outcome event; returns the outcome's type (or why it did nothing)."""
        key = (spec.task_id, spec.attempt)
        if key in self._inflight:
            return "duplicate"
        self._inflight.add(key)
        try:
            return await self._run(spec, token)
        finally:
            self._inflight.discard(key)

    async def _run(self, spec: AttemptSpec, token: Token) -> str:
        store = self._events()
        bound = log.bind(task_id=spec.task_id, attempt=spec.attempt, worker=self._index)
        if spec.resent and is_stale(spec, await store.task_view(spec.task_id)):
            # Sent again after a QueueActor or key pool restart, and already ended.
            return "stale"
        try:
            images = await self._inputs(spec)
        except Exception as exc:
            return await self._record(store, spec, outcome(spec, Unreadable(type(exc).__name__), time.time()))
        request = ImageRequest(spec.task_id, spec.kind, spec.prompt, images, spec.options)
        if too_late(spec, time.time()):
            return await self._expire(store, spec)
        now = time.time()
        if too_late(spec, max(now, token.not_before)):
            # No call starts after the deadline; a token that came too late goes unused.
            return await self._expire(store, spec)
        if not token.granted:
            recorded = await self._record(store, spec, outcome(spec, NoPool(token.reason), now))
            if recorded == TaskUpstreamThrottled.type:
                bound.info("no pool can serve; task back in its place", reason=token.reason)
            return recorded
        pool, key_id = token.pool, token.key_id
        bound = bound.bind(pool=pool, key_id=key_id)
        # Without [[routes]] nothing is refunded at success (a price changed since the charge
        # is not a cheaper route), and the provider's model serves.
        route = route_of(self._config, pool, spec.kind) if self._config.routes else None
        if route is not None:  # the provider calls with the route's model
            request = replace(request, model=route.model)
        start = started(spec, pool, key_id, token.not_before, now)
        # The call starts as soon as the token is in hand (the limiter counted it at the
        # grant); the started event is written meanwhile, and a refused one stops the call.
        call = asyncio.ensure_future(
            self._call(spec, request, pool, key_id, start.at, bound, token.not_before)
        )
        if await self._append(store, [start], self._expect(spec)) is None:
            call.cancel()
            return await self._late(store, spec, start.type)
        self._metrics.queue_wait.observe(start.waited)
        ended = outcome(spec, await call, time.time(), route)
        if isinstance(ended, TaskSucceeded):
            self._metrics.call(pool, 200, ended.elapsed)
        elif isinstance(ended, TaskAttemptFailed):
            self._metrics.call(pool, ended.code, ended.elapsed)
        elif isinstance(ended, TaskUpstreamThrottled):
            self._metrics.call(pool, ended.code, max(0.0, ended.at - start.at))
        recorded = await self._record(store, spec, ended, route)
        if recorded == ended.type and not isinstance(ended, TaskSucceeded):
            # A success is in the event log and the metrics: a line for each (read again by
            # Ray's log monitor and sent through the GCS) cost 0.15-0.2 ms of CPU a task.
            bound.info("attempt ended", outcome=ended.type)
        return recorded

    async def _inputs(self, spec: AttemptSpec) -> dict[str, bytes]:
        """The task's input images, read from the blob store."""
        return {role: await self._blobs.read(ref) for role, ref in spec.inputs.items()}

    async def _call(
        self,
        spec: AttemptSpec,
        request: ImageRequest,
        pool: str,
        key_id: str,
        t0: float,
        bound: Any,
        not_before: float = 0.0,
    ) -> Generated | Refused | Crashed:
        """Call the provider and store its image; a quota or key refusal is reported to the key pool."""

        if self._sends is None:
            self._sends = SendReports(self._keypool)
        reports = self._sends

        def sent(at: float) -> None:
            reports.sent(spec.task_id, spec.attempt, at)

        tier = self._config.pool(pool).service_tier  # the service tier the pool's calls ask for
        try:
            key = self._secrets[key_id] if key_id in self._secrets else self._config.key_secret(key_id)
            result = await self._provider.generate(request, key, sent, not_before, tier)
            ext = _EXTENSIONS.get(result.mime_type, "bin")
            ref = task_blob(spec.task_id, f"result-{spec.attempt}.{ext}")
            await self._blobs.write({ref: result.data})
        except ProviderError as exc:
            bound.warning("attempt failed", error=exc.reason, failure=exc.failure.value, code=exc.code)
            refused = Refused(pool, key_id, exc, t0)
            failure = report(refused)
            if failure is not None:
                await self._keypool.report.remote(pool, failure)
            return refused
        except Exception as exc:
            bound.exception("attempt crashed")
            return Crashed(pool, type(exc).__name__, t0)
        return Generated(pool, ref, result.mime_type, t0, tier, result.service_tier)

    @staticmethod
    def _expect(spec: AttemptSpec) -> dict[str, Expect]:
        # The store appends an attempt's event only while the task runs that attempt.
        return {spec.task_id: Expect(RUNNING, spec.attempt)}

    async def _record(
        self, store: EventStore, spec: AttemptSpec, event: Outcome, route: Route | None = None
    ) -> str:
        """Append the attempt's `event` (with a success's route refund, `settled`); returns its
        type, or the late event's when the guard refused it."""
        if await self._append(store, settled(spec, event, route), self._expect(spec)) is None:
            return await self._late(store, spec, event.type)
        return event.type

    async def _append(
        self, store: EventStore, events: list[Event], expect: dict[str, Expect] | None
    ) -> list[str] | None:
        """Append with the other attempts' events in one script call, riding out a store outage
        for up to the lease: an outcome is never dropped early.

        Retrying is safe: the guard refuses a second copy once the first one landed.
        """
        if self._appender is None:
            self._appender = Appender(store, self._config.queue.lease_seconds, log)
        return await self._appender.append(events, expect)

    async def _expire(self, store: EventStore, spec: AttemptSpec) -> str:
        """End the task expired (with its refund) in place of its call."""
        events = expired(spec, time.time())
        if await self._append(store, events, self._expect(spec)) is None:
            return await self._late(store, spec, TaskExpired.type)
        log.info("deadline passed before the call", task_id=spec.task_id, attempt=spec.attempt)
        return TaskExpired.type

    async def _late(self, store: EventStore, spec: AttemptSpec, refused: str) -> str:
        late = outcome(spec, Superseded(refused), time.time())
        await self._append(store, [late], None)
        log.info("late outcome recorded", task_id=spec.task_id, attempt=spec.attempt, outcome=refused)
        return late.type
