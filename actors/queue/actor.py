"""The QueueActor: FIFO order, slots, leases and retry decisions, as a fold over the stream."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import ray
import structlog

from actors.archiving import archive_of
from actors.config import Config, lane_weights, reserved_slots
from actors.logs import configure
from actors.messages import Grants, Token
from actors.queue.alerts import evaluate
from actors.queue.decide import (
    Decision,
    Policy,
    cancel,
    decide,
    dispatch_only,
    gathers,
    next_wakeup,
    pools_usable_at,
    recalls,
)
from actors.queue.outbox import Outbox
from actors.queue.snapshots import Snapshots
from actors.queue.state import QueueState, apply, restore
from actors.shell import Backoff, Cadence, recover
from actors.telemetry import QueueMetrics
from actors.webhooks.sender import Deliverer
from actors.worker.actor import READY_TIMEOUT
from events.catalogue import (
    RUNNING,
    AlertRaised,
    AlertResolved,
    Event,
    KeyLimitLearned,
    SnapshotTaken,
    StoredEvent,
    TaskDispatched,
    stream_id_key,
)
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import Expect

log = structlog.get_logger("genqueue.queue")

MAX_BLOCK_MS = 1000
TAIL_COUNT = 1000  # events read at most per step
SNAPSHOT_ACTOR = "queue"
ALERT_EVERY_SECONDS = 1.0


class Queue:
    """A sync actor with one background event loop that alone reads, decides, appends and applies.

    Ray calls (status, ping) run on the actor's main thread and only read copies handed over
    by the loop thread, so a call's arrival order never affects queue order.
    """

    def __init__(self, config: Config, workers: list[Any], keypool: Any, rng_seed: int | None = None) -> None:
        configure()
        self._config = config
        self._workers = workers
        # The key pool hands each round's attempts on to their workers with their tokens; with
        # tokens_per_round the dispatches take their tokens first (one call a round) and a task
        # waits for quota in its place. With lanes, slots are taken back through it (`recalls`).
        self._keypool = keypool
        self._recalled: set[tuple[str, int]] = set()  # attempts whose slot was asked back
        self._tokens_at = 0.0  # no token to be had before this (epoch seconds)
        self._outbox = Outbox(workers, keypool)
        # Stream ids of the queue's own events, applied when appended, skipped when tailed.
        self._own: set[str] = set()
        self._policy = Policy(
            slots=config.queue.slots,
            lease_seconds=config.queue.lease_seconds,
            max_attempts=config.queue.max_attempts,
            workers=len(workers),
            per_user_running=config.queue.per_user_running,
            weights=lane_weights(config),
            reserved=reserved_slots(config),
        )
        self._pool_keys = [(p.name, p.key_hints) for p in config.pools]
        self._gather = config.queue.gather_ms / 1000
        self._rng = random.Random(rng_seed)
        self._state = QueueState()
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="queue-pump", daemon=True)
        self._thread.start()
        self._recovery: dict[str, Any] = {}
        self._metrics = QueueMetrics()
        self._alerts_at = 0.0
        self._deciding = asyncio.Lock()
        # The first call to each worker sets up the route to it; made here, not in a burst. So
        # does the key pool's to each worker, through which it hands them their attempts.
        pings = [*(w.ping.remote() for w in workers), keypool.ready.remote(len(workers))]
        ray.wait(pings, num_returns=len(pings), timeout=READY_TIMEOUT)
        self._store = self._call(self._connect)
        cadence = Cadence(config.queue.snapshot_every, config.queue.snapshot_seconds, time.monotonic())
        self._snapshots = Snapshots(self._store, SNAPSHOT_ACTOR, cadence)
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
            self._outbox.put(self._state, task_id, lease.attempt, lease.worker, resent=True)
        self._outbox.flush()
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
            archive=archive_of(self._config),
        )
        self._state = recovered.state
        self._recovery = recovered.summary()
        # A long replay is worth a snapshot right away.
        self._snapshots.cadence.since = recovered.replayed

    def _notify(self, event: AlertRaised | AlertResolved) -> None:
        """Deliver an alert to every configured webhook, in the background."""
        log.warning("alert " + ("raised" if isinstance(event, AlertRaised) else "resolved"), alert=event.name)
        self._webhooks.alert(event)

    def _apply(self, batch: list[StoredEvent]) -> None:
        """Fold tailed events in stream order, skipping the queue's own (applied when appended)."""
        applied = stream_id_key(self._state.last_id)
        for stored in batch:
            if stream_id_key(stored.id) <= applied:
                continue  # a cancel already read it
            if stored.id in self._own:
                self._own.discard(stored.id)
                self._state.last_id = stored.id
                continue
            self._fold(stored)
        self._outbox.flush()

    def _fold(self, stored: StoredEvent) -> None:
        apply(self._state, stored)
        event = stored.event
        if not isinstance(event, SnapshotTaken):
            self._snapshots.cadence.count()
        if isinstance(event, TaskDispatched) and self._state.running.get(event.task_id):
            self._outbox.put(self._state, event.task_id, event.attempt, event.worker)
        elif isinstance(event, AlertRaised | AlertResolved):
            self._notify(event)
        elif isinstance(event, KeyLimitLearned):
            self._tokens_at = 0.0  # a pool's rate changed: ask again
        self._webhooks.follow(self._state, event)

    async def _append_own(
        self, events: tuple[Event, ...] | list[Event], expect: Mapping[str, Expect] | None
    ) -> list[str] | None:
        """Append the queue's own decision and fold it in at once, without reading it back.

        The tail still delivers it later, in stream order, and skips it then. Events between
        the last one applied and these are folded when tailed: a decision's guards (or the
        queue being their only writer) make its events independent of them, and the fold of
        each of the queue's own events is idempotent.
        """
        ids: list[str] | None = await self._store.append(events, expect or None)
        if ids is None:
            return None
        last = self._state.last_id
        for stored_id, event in zip(ids, events, strict=True):
            self._own.add(stored_id)
            self._fold(StoredEvent(stored_id, event))
        self._state.last_id = last
        self._outbox.flush()
        return ids

    async def _step(self) -> None:
        async with self._deciding:
            if await self._decide():
                return
        now = time.time()
        usable = pools_usable_at(self._state, self._pool_keys, now)
        wake = next_wakeup(self._state, usable if usable > now else 0.0, now)
        if self._tokens_at > now and self._state.waiting and len(self._state.running) < self._policy.slots:
            wake = self._tokens_at if wake is None else min(wake, self._tokens_at)
        block = MAX_BLOCK_MS if wake is None else int(min(MAX_BLOCK_MS, max(1.0, (wake - now) * 1000)))
        batch = await self._store.tail(self._state.last_id, block, TAIL_COUNT)
        if self._gather and gathers(self._state, batch, full=len(batch) >= TAIL_COUNT):
            # New work for an idle queue: what the stream brings in the next few milliseconds
            # joins its round, so that submits coming one by one cost one round, one call to
            # each worker and one token ask together, not one each ([queue] gather_ms).
            await asyncio.sleep(self._gather)
            batch += await self._store.read(batch[-1].id, TAIL_COUNT)
        async with self._deciding:
            self._apply(batch)
        self._metrics.update(self._state.waiting, len(self._state.running))
        self._snapshots.maybe(self._state, settled=not self._own)

    async def _decide(self) -> bool:
        """Decide and append; True when something was appended (and applied)."""
        if self._outbox.unsent:
            while self._outbox.unsent:
                failed = self._outbox.unsent[0]
                await self._append_own([failed], {failed.task_id: Expect(RUNNING, failed.attempt)})
                self._outbox.unsent.pop(0)
            return True
        now = time.time()
        usable = pools_usable_at(self._state, self._pool_keys, now)
        decisions = decide(self._state, self._policy, now, self._rng, usable)
        if decisions and self._config.keypool.tokens_per_round:
            decisions = await self._with_tokens(decisions, now)
        if now - self._alerts_at >= ALERT_EVERY_SECONDS:
            self._alerts_at = now
            alerts = evaluate(self._state, self._config.alerts, now, self._pool_keys)
            if alerts:
                decisions.append(Decision(tuple(alerts)))
        refused = False
        for decision in decisions:
            refused |= await self._append_own(decision.events, decision.expect) is None
        if refused:
            # A guard found a task view ahead of this state: catch up before deciding again,
            # or the same decision would be refused for ever.
            self._apply(await self._store.read(self._state.last_id))
        if self._policy.weights:
            await self._recall(now)
        return bool(decisions)

    async def _recall(self, now: float) -> None:
        """Ask the key pool to take back the slots `recalls` names (each asked once)."""
        held = {(t, lease.attempt) for t, lease in self._state.running.items()}
        self._recalled &= held
        wanted = [pair for pair in recalls(self._state, self._policy, now) if pair not in self._recalled]
        if wanted:
            self._recalled.update(wanted)
            taken = await self._keypool.withdraw.remote(wanted)
            log.info("slots taken back for a lane below its share", asked=len(wanted), withdrawn=taken)

    async def _with_tokens(self, decisions: list[Decision], now: float) -> list[Decision]:
        """The decisions with only the dispatches the key pool gave tokens to (one call a round).

        Dispatches come in queue order and tokens cover a prefix of them; the rest wait in
        their places until a pool has a place again (`_tokens_at`).
        """
        first = decisions[0]
        wanted = [e for e in first.events if isinstance(e, TaskDispatched)]
        if not wanted:
            return decisions
        tokens: tuple[Token, ...] = ()
        if now >= self._tokens_at:
            grants: Grants = await self._keypool.grant_many.remote([(e.task_id, e.attempt) for e in wanted])
            tokens = grants.tokens
            if len(tokens) < len(wanted):
                lead = self._config.keypool.lead_seconds
                # Asked again at least once a second, whatever the pools said.
                self._tokens_at = min(now + 1.0, grants.until or max(now, grants.next_free - lead))
        for event, token in zip(wanted, tokens, strict=False):
            self._outbox.tokens[(event.task_id, event.attempt)] = token
        return dispatch_only(decisions, len(tokens))

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
                ids = await self._append_own(outcome.events, outcome.expect)
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
            async with self._deciding:
                self._apply(await self._store.read(self._state.last_id))
            await self._snapshots.written()
            return await self._snapshots.take(self._state, settled=not self._own)

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
                "expired": s.expired,
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
