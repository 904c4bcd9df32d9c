"""The QueueActor: FIFO order, slots, leases and retry decisions, as a fold over the stream."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import ray
import structlog

from actors.config import Config
from actors.logs import configure
from actors.messages import AttemptSpec
from actors.queue.alerts import evaluate
from actors.queue.decide import Decision, Policy, cancel, decide, next_wakeup, pools_usable_at
from actors.queue.state import QueueState, apply, restore, snapshot
from actors.shell import Backoff, Cadence, recover, take_snapshot
from actors.telemetry import QueueMetrics
from actors.webhooks.sender import Deliverer
from actors.worker.actor import READY_TIMEOUT
from events.catalogue import (
    RUNNING,
    AlertRaised,
    AlertResolved,
    SnapshotTaken,
    StoredEvent,
    TaskAttemptFailed,
    TaskDispatched,
    stream_id_key,
)
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import Expect

log = structlog.get_logger("genqueue.queue")

MAX_BLOCK_MS = 1000
SNAPSHOT_ACTOR = "queue"
ALERT_EVERY_SECONDS = 1.0


class Queue:
    """A sync actor with one background event loop that alone reads, decides, appends and applies.

    Ray calls (status, ping) run on the actor's main thread and only read copies handed over
    by the loop thread, so a call's arrival order never affects queue order.
    """

    def __init__(self, config: Config, workers: list[Any], rng_seed: int | None = None) -> None:
        configure()
        self._config = config
        self._workers = workers
        self._policy = Policy(
            slots=config.queue.slots,
            lease_seconds=config.queue.lease_seconds,
            max_attempts=config.queue.max_attempts,
            workers=len(workers),
            per_user_running=config.queue.per_user_running,
        )
        self._pool_keys = [(p.name, p.key_hints) for p in config.pools]
        self._rng = random.Random(rng_seed)
        self._state = QueueState()
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="queue-pump", daemon=True)
        self._thread.start()
        self._cadence = Cadence(config.queue.snapshot_every, config.queue.snapshot_seconds, time.monotonic())
        self._recovery: dict[str, Any] = {}
        self._metrics = QueueMetrics()
        self._alerts_at = 0.0
        self._deciding = asyncio.Lock()
        # Attempts that could not be handed to a worker, to be failed by the next step.
        self._unsent: list[TaskAttemptFailed] = []
        # The first call to each worker sets up the route to it; made here, not in a burst.
        ray.wait([w.ping.remote() for w in workers], num_returns=len(workers), timeout=READY_TIMEOUT)
        self._store = self._call(self._connect)
        started = time.monotonic()
        self._call(self._recover)
        log.info(
            "queue recovered",
            last_id=self._state.last_id,
            waiting=self._state.waiting,
            running=len(self._state.running),
            seconds=round(time.monotonic() - started, 3),
        )
        for task_id, lease in self._state.running.items():
            self._send(task_id, lease.attempt, lease.worker, resent=True)
        self._webhooks = Deliverer(config, random.Random(rng_seed))
        self._webhooks.resume(self._state)
        self._pump_future = asyncio.run_coroutine_threadsafe(self._pump(), self._loop)

    def _call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    async def _connect(self) -> RedisEventStore:
        return RedisEventStore.from_url(self._config.redis.url, self._config.redis.namespace)

    async def _recover(self) -> None:
        """The newest readable snapshot plus the events after it; waits out a store outage."""
        recovered = await recover(
            self._store,
            SNAPSHOT_ACTOR,
            load=restore,
            empty=QueueState,
            covers=lambda state: state.last_id,
            fold=apply,
            log=log,
        )
        self._state = recovered.state
        self._recovery = recovered.summary()
        # A long replay is worth a snapshot right away.
        self._cadence.since = recovered.replayed

    async def _maybe_snapshot(self) -> None:
        if self._cadence.due(time.monotonic()):
            await take_snapshot(
                self._store, SNAPSHOT_ACTOR, self._state.last_id, lambda: snapshot(self._state), log
            )
            self._cadence.taken(time.monotonic())

    def _notify(self, event: AlertRaised | AlertResolved) -> None:
        """Deliver an alert to every configured webhook, in the background."""
        log.warning("alert " + ("raised" if isinstance(event, AlertRaised) else "resolved"), alert=event.name)
        self._webhooks.alert(event)

    def _send(self, task_id: str, attempt: int, worker: int, resent: bool = False) -> None:
        entry = self._state.tasks.get(task_id)
        if entry is None:
            return
        spec = AttemptSpec(
            task_id=task_id,
            attempt=attempt,
            kind=entry.kind,
            prompt=entry.prompt,
            inputs=entry.inputs,
            options=entry.options,
            resent=resent,
            submitted_at=entry.at,
            order=entry.order,
            dispatched_at=lease.since if (lease := self._state.running.get(task_id)) else 0.0,
        )
        try:
            self._workers[worker % len(self._workers)].run.remote(spec)
        except Exception as exc:
            # The attempt cannot reach a worker (its arguments cannot be serialised, say):
            # it fails, not the queue step, and sending it again would fail the same way.
            log.exception("could not hand an attempt to a worker", task_id=task_id, attempt=attempt)
            self._unsent.append(
                TaskAttemptFailed(
                    task_id=task_id,
                    attempt=attempt,
                    error=f"could not hand the attempt to a worker: {type(exc).__name__}",
                    retryable=False,
                    at=time.time(),
                )
            )

    def _apply(self, batch: list[StoredEvent]) -> None:
        applied = stream_id_key(self._state.last_id)
        for stored in batch:
            if stream_id_key(stored.id) <= applied:
                continue  # a cancel already read it
            apply(self._state, stored)
            event = stored.event
            if not isinstance(event, SnapshotTaken):
                self._cadence.count()
            if isinstance(event, TaskDispatched) and self._state.running.get(event.task_id):
                self._send(event.task_id, event.attempt, event.worker)
            elif isinstance(event, AlertRaised | AlertResolved):
                self._notify(event)
            self._webhooks.follow(self._state, event)

    async def _step(self) -> None:
        async with self._deciding:
            if await self._decide():
                return
        now = time.time()
        usable = pools_usable_at(self._state, self._pool_keys, now)
        wake = next_wakeup(self._state, usable if usable > now else 0.0)
        block = MAX_BLOCK_MS if wake is None else int(min(MAX_BLOCK_MS, max(1.0, (wake - now) * 1000)))
        batch = await self._store.tail(self._state.last_id, block)
        async with self._deciding:
            self._apply(batch)
        self._metrics.update(self._state.waiting, len(self._state.running))
        await self._maybe_snapshot()

    async def _decide(self) -> bool:
        """Decide and append; True when something was appended (and applied)."""
        if self._unsent:
            while self._unsent:
                failed = self._unsent[0]
                await self._store.append([failed], {failed.task_id: Expect(RUNNING, failed.attempt)})
                self._unsent.pop(0)
            self._apply(await self._store.read(self._state.last_id))
            return True
        now = time.time()
        usable = pools_usable_at(self._state, self._pool_keys, now)
        decisions = decide(self._state, self._policy, now, self._rng, usable)
        if now - self._alerts_at >= ALERT_EVERY_SECONDS:
            self._alerts_at = now
            alerts = evaluate(self._state, self._config.alerts, now, self._pool_keys)
            if alerts:
                decisions.append(Decision(tuple(alerts)))
        for decision in decisions:
            await self._store.append(decision.events, decision.expect or None)
        if decisions:
            self._apply(await self._store.read(self._state.last_id))
            return True
        return False

    def cancel(self, task_id: str, reason: str = "cancelled by the caller") -> str:
        """Cancel a waiting task and refund it: "cancelled", or "running" / "ended" when it
        is not waiting. Decided on the loop thread between two steps, so a task is never
        dispatched after its cancellation."""

        async def run() -> str:
            async with self._deciding:
                self._apply(await self._store.read(self._state.last_id))
                outcome = cancel(self._state, task_id, time.time(), reason)
                if isinstance(outcome, str):
                    return outcome
                ids = await self._store.append(outcome.events, outcome.expect)
                self._apply(await self._store.read(self._state.last_id))
                return "cancelled" if ids is not None else "running"

        result: str = self._call(run, timeout=30)
        return result

    async def _pump(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            try:
                await self._step()
                backoff.reset()
            except StoreUnavailableError as exc:
                log.warning("event store unavailable; retrying", error=str(exc), delay=backoff.delay)
                await backoff.wait()
            except Exception:
                log.exception("queue step failed")
                await backoff.wait()

    def take_snapshot(self) -> str:
        """Snapshot now (operators, benchmarks); returns the stream id it covers."""

        async def take() -> str:
            self._cadence.force()
            await self._maybe_snapshot()
            return self._state.last_id

        result: str = self._call(take, timeout=60)
        return result

    def pid(self) -> int:
        """The actor's process id (tests watch it change across a restart)."""
        return os.getpid()

    def ping(self) -> str:
        """Liveness: the last stream id applied."""
        return self._state.last_id

    def status(self) -> dict[str, Any]:
        """A copy of the headline figures, read on the loop thread."""

        async def read() -> dict[str, Any]:
            s = self._state
            return {
                "pid": os.getpid(),
                "recovery": dict(self._recovery),
                "last_id": s.last_id,
                "waiting": s.waiting,
                "running": len(s.running),
                "slots": self._policy.slots,
                "succeeded": s.succeeded,
                "failed": s.failed,
                "cancelled": s.cancelled,
                "late": s.late,
                "throttled": s.throttled,
                "waiting_order": list(s.waiting_order()),
                "running_tasks": {t: lease.attempt for t, lease in s.running.items()},
                "webhooks_pending": len(s.webhooks),
            }

        result: dict[str, Any] = self._call(read, timeout=10)
        return result

    def shutdown(self) -> None:
        """Stop the loop thread (used before the actor is killed on purpose)."""
        self._stopping = True
        self._pump_future.cancel()
        self._webhooks.stop()
