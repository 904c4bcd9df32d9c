"""The KeyPoolActor: rate-limit tokens from quota pools in FIFO order, never overrunning a window."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import structlog

from actors.archiving import archive_of
from actors.config import Config, lane_weights
from actors.config.routes import chain as routes_of
from actors.keypool.asks import Asks
from actors.keypool.decide import (
    grant_round,
    learn,
    probe_all,
    recovered_sends,
    reported_sends,
    usable_at,
)
from actors.keypool.handoff import WorkerRoutes, hand_on, marked_resent
from actors.keypool.line import Line, Waiter
from actors.keypool.routes import route_groups
from actors.keypool.state import (
    KeyPoolEvent,
    PoolState,
    apply,
    call_name,
    from_config,
    restore,
    snapshot,
)
from actors.keypool.status import outage
from actors.logs import configure
from actors.messages import YIELDED, Ask, AttemptSpec, CallFailure, Grants, Token
from actors.shell import Cadence, recover, retrying, take_snapshot
from actors.telemetry import PoolMetrics
from events.catalogue import AlertRaised, StoredEvent
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import EventStore

log = structlog.get_logger("genqueue.keypool")

SNAPSHOT_ACTOR = "keypool"
SNAPSHOT_SECONDS = 10.0
SNAPSHOT_EVENTS = 20_000
METRICS_SECONDS = 0.5
# Reported sends that found no grants to ride with for this long are written alone, so
# that a restart dates few grants at its own time (each such date holds a place longer).
FLUSH_SECONDS = 0.1


def _stop_on_crash(granter: asyncio.Task[None]) -> None:
    """The grant loop never returns; if it raised, no caller would get a token again. The
    process exits instead, and Ray starts the actor anew (it rebuilds its state from the
    event log, and the QueueActor's `hand_many` calls are sent again)."""
    if granter.cancelled() or granter.exception() is None:
        return
    log.critical("the grant loop stopped; restarting the key pool", exc_info=granter.exception())
    os._exit(1)


class KeyPool:
    """Async actor; its state is a fold over the key events, changed under one lock, tokens in task order.

    Waiters are served by their task's queue order (then arrival), so a task that went
    back to its place after a 429 gets the next token before later tasks.
    """

    def __init__(self, config: Config) -> None:
        configure()
        self._config = config
        self._state = from_config(self._config)
        self._line = Line(lane_weights(config), {lane.name: lane.reserved for lane in config.lanes})
        self._asks = Asks()  # attempts asked for whose answer has not gone back yet
        # Sends reported by workers (call name -> wire time), written with the next grants, and
        # since when (monotonic) the oldest of them waits.
        self._reported: dict[str, float] = {}
        self._reported_since = 0.0
        self._store: EventStore | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._granter: asyncio.Task[None] | None = None
        self._init_lock: asyncio.Lock | None = None
        self._cadence = Cadence(every=SNAPSHOT_EVENTS, seconds=SNAPSHOT_SECONDS, at=time.monotonic())
        self._recovery: dict[str, Any] = {}
        self._metrics = PoolMetrics()
        self._metrics_at = 0.0
        self._calls: Counter[str] = Counter()  # calls per method of the hot path
        self._workers = WorkerRoutes(config)  # to hand the attempts on to

    @property
    def _pools(self) -> list[PoolState]:
        return list(self._state.pools.values())

    async def _ensure(self) -> None:
        if self._granter is not None:
            return
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._granter is not None:
                return
            self._store = RedisEventStore.from_url(self._config.redis.url, self._config.redis.namespace)
            await self._recover(self._store)
            self._wake, self._lock = asyncio.Event(), asyncio.Lock()
            self._granter = asyncio.create_task(self._grant_loop())
            self._granter.add_done_callback(_stop_on_crash)

    async def _recover(self, store: EventStore) -> None:
        """The newest readable snapshot and every event after it; then the grants whose sending
        the log lacks are dated now (see `actors.keypool.state`)."""
        recovered = await recover(
            store,
            SNAPSHOT_ACTOR,
            load=lambda data: restore(data, from_config(self._config)),
            empty=lambda: from_config(self._config),
            covers=lambda state: state.last_id,
            fold=apply,
            log=log,
            archive=archive_of(self._config),
        )
        self._state = recovered.state
        dated = recovered_sends(self._state, time.time()) if self._config.keypool.redate_late_sends else None
        if dated is not None:
            await self._append([dated])
        self._cadence.since = recovered.replayed
        self._recovery = {
            **recovered.summary(),
            "dated_at_start": len(dated.calls) if dated else 0,
            "pools": {
                p.name: {"rate": p.rate, "parked_until": p.parked_until, "disabled": sorted(p.disabled)}
                for p in self._pools
            },
        }
        log.info("key pools recovered", **{k: v for k, v in self._recovery.items() if k != "pools"})

    async def _append(self, events: Sequence[KeyPoolEvent | AlertRaised]) -> None:
        """Write key events and their alerts, riding out an outage, then fold them in as a replay would."""
        assert self._store is not None
        store = self._store
        ids = await retrying("cannot record key events; retrying", lambda: store.append(events), log)
        assert ids is not None  # None only for an append with expectations
        for stored_id, event in zip(ids, events, strict=True):
            apply(self._state, StoredEvent(stored_id, event))
        self._cadence.count(len(events))

    async def _maybe_snapshot(self) -> None:
        """Every SNAPSHOT_SECONDS with new events (or SNAPSHOT_EVENTS of them): the whole state."""
        assert self._store is not None
        if self._cadence.due(time.monotonic()):
            with contextlib.suppress(StoreUnavailableError):
                state = self._state
                await take_snapshot(self._store, SNAPSHOT_ACTOR, state.last_id, lambda: snapshot(state), log)
                self._cadence.taken(time.monotonic())

    async def acquire(
        self,
        task_id: str,
        attempt: int,
        order: float = 0.0,
        until: float = 0.0,
        kind: str = "",
        price: int = 0,
        lane: str = "",
    ) -> Token:
        """One attempt's token, asked for alone (`hand_many` asks for a round's attempts)."""
        self._calls["acquire"] += 1
        [(_, _, token)] = await self._answers([Ask(task_id, attempt, order, until, kind, price, lane)])
        return token

    async def hand_many(self, worker: int, specs: list[AttemptSpec]) -> int:
        """The QueueActor's attempts of one round for worker `worker`, each handed on to it with
        its answer as soon as it has one (`actors.keypool.handoff`); returns once all were.

        Tokens go out in task `order`; an attempt granted before gets the same grant. Refused (a
        Token without a pool) when no pool can serve at all (every pool parked for the day or
        out of keys; cooldowns are waited out), or past its `deadline` (reason "deadline": it
        leaves the line, taking no place in a window). With `[[routes]]` the token comes from a
        route of its `kind` that costs no more than its `price` (`actors.keypool.routes`); with
        `[[lanes]]` the tokens are shared among the lanes by weight (`actors.keypool.line`).
        """
        self._calls["hand_many"] += 1
        self._calls["asks"] += len(specs)
        await self._ensure()
        run_granted = self._workers.get(worker).run_granted.remote
        return await hand_on(marked_resent(specs, self._known), self._answers, run_granted)

    async def ready(self, workers: int) -> int:
        """Open the routes to workers 0..`workers`-1 (the QueueActor's start calls this); how
        many answered."""
        return await self._workers.open(workers)

    async def _answers(self, asks: list[Ask]) -> list[tuple[str, int, Token]]:
        await self._ensure()
        assert self._wake is not None
        self._asks.prune()
        loop = asyncio.get_running_loop()
        for ask in asks:
            key = (ask.task_id, ask.attempt)
            if self._asks.get(key) is not None:
                continue  # asked before: it keeps its place
            if (known := self._known(*key)) is not None:
                future: asyncio.Future[Token] = loop.create_future()
                future.set_result(known)
            else:
                routes = self._routes(ask.kind, ask.price)
                future = self._line.join(ask.order, ask.task_id, ask.attempt, routes, ask.until, ask.lane)
                self._wake.set()
            self._asks.add(key, future)
        return await self._asks.answers(asks)

    async def withdraw(self, attempts: list[tuple[str, int]]) -> int:
        """Refuse the `attempts` still waiting for a token (reason YIELDED): the QueueActor takes
        their slots back for a lane below its share; they return to their places, with no call
        made. One already granted keeps its token. How many were withdrawn."""
        self._calls["withdraw"] += 1
        return self._line.withdraw(set(attempts), Token(until=time.time(), reason=YIELDED))

    def _routes(self, kind: str, price: int) -> tuple[tuple[str, ...], ...] | None:
        """The pool groups a task of `kind` charged `price` may use (None: any pool)."""
        if not self._config.routes or not kind:
            return None
        chain = [(route.pools, route.price) for route in routes_of(self._config, kind)]
        charged = price if self._config.credits.enabled else max((p for _, p in chain), default=0)
        return route_groups(chain, charged)

    def _known(self, task_id: str, attempt: int) -> Token | None:
        known = self._state.grants.get((task_id, attempt))
        return None if known is None else Token(known.pool, known.key_id, not_before=known.at)

    async def _grant_loop(self) -> None:
        assert self._wake is not None and self._lock is not None
        lead = self._config.keypool.lead_seconds
        while True:
            async with self._lock:
                now = time.time()
                if learned := probe_all(self._pools, now):
                    await self._append(learned)
                if self._line and (back := usable_at(self._pools, now)) > now:
                    self._refuse_all(back, now)
                reported = dict(self._reported)
                served: list[Waiter] = []
                again: list[Waiter] = []
                shut: set[str] = set()  # lanes whose waiters may take no place left this turn
                line = self._line.take(self._known, served, again, shut)
                turn = grant_round(self._state, reported, line, now, lead, shut)
                events = turn.events
                waited = time.monotonic() - self._reported_since
                flush = not events and bool(reported) and waited >= FLUSH_SECONDS
                if flush and (record := reported_sends(self._state, reported, now)) is not None:
                    events = [record]
                if events:
                    await self._append([*events, *turn.alerts])
                if events or flush:
                    self._reported = {k: v for k, v in self._reported.items() if reported.get(k) != v}
                    self._reported_since = time.monotonic()
                self._line.hand_out(served + again, turn.grants)
            self._update_metrics(now)
            await self._maybe_snapshot()
            self._wake.clear()
            wake_at = math.inf
            if self._line:
                wake_at = turn.next_free - lead
                if any(p.rate < p.rpm for p in self._pools):
                    wake_at = min(wake_at, now + min(p.window for p in self._pools))
            if self._reported:
                wake_at = min(wake_at, now + FLUSH_SECONDS)
            timeout = None if math.isinf(wake_at) else wake_at - time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), None if timeout is None else max(0.0, timeout))

    def _update_metrics(self, now: float) -> None:
        if now - self._metrics_at >= METRICS_SECONDS:
            self._metrics_at = now
            for pool in self._pools:
                self._metrics.update(pool.name, pool.available(now), pool.rate, pool.status(now).state)

    async def grant_many(self, wanted: list[tuple[str, int]]) -> Grants:
        """Tokens for one round of the QueueActor's dispatches, (task id, attempt) in queue order:
        granted in that order while a pool has a place now or within the lead, so the answer
        covers a prefix of `wanted`. An attempt granted before gets its grant again.

        The QueueActor dispatches only the attempts given tokens, so a task waits for quota in
        its place in the queue, not in a slot.
        """
        await self._ensure()
        assert self._lock is not None
        self._calls["grant_many"] += 1
        async with self._lock:
            now = time.time()
            if learned := probe_all(self._pools, now):
                await self._append(learned)
            back = usable_at(self._pools, now)
            if back > now:
                return Grants((), back, until=back)
            known: dict[tuple[str, int], Token] = {}
            fresh: list[tuple[str, int]] = []
            for key in wanted:
                if (token := self._known(*key)) is not None:
                    known[key] = token
                else:
                    fresh.append(key)
            reported = dict(self._reported)
            turn = grant_round(self._state, reported, iter(fresh), now, self._config.keypool.lead_seconds)
            if turn.events:
                await self._append([*turn.events, *turn.alerts])
                self._reported = {k: v for k, v in self._reported.items() if reported.get(k) != v}
                self._reported_since = time.monotonic()
        granted = {(g.task_id, g.attempt): Token(g.pool, g.key_id, not_before=g.at) for g in turn.grants}
        tokens: list[Token] = []
        for key in wanted:
            token = known.get(key) or granted.get(key)
            if token is None:
                break
            tokens.append(token)
        self._update_metrics(now)
        await self._maybe_snapshot()
        return Grants(tuple(tokens), turn.next_free)

    async def sent_many(self, sends: list[tuple[str, int, float]]) -> None:
        """Several `sent` reports, (task id, attempt, wire time), in one call."""
        self._calls["sent_many"] += 1
        self._calls["sends"] += len(sends)
        for task_id, attempt, at in sends:
            await self.sent(task_id, attempt, at)

    def _refuse_all(self, until: float, now: float) -> None:
        """Answer every waiter with a refusal that says why no pool serves (`outage`)."""
        down = outage(p.status(now) for p in self._pools)
        reason = down.reason if down is not None else "no quota pool can serve"
        self._line.refuse_all(Token(until=until, reason=reason))

    async def sent(self, task_id: str, attempt: int, at: float) -> None:
        """The call of this grant went out on the wire at `at`: count it in its window from then on.

        A call goes out some milliseconds after its grant, by a delay that grows with load
        (hundreds of milliseconds while a burst of submits takes the CPU), and upstream counts
        it on arrival. Its grant is re-dated to that time, so the call that reuses its place a
        window later stays a full window behind it upstream too; the margin then covers only
        the network's jitter. The report is written with the next grants (`key.grants_redated`),
        which are decided with it, or alone within FLUSH_SECONDS.
        """
        if self._config.keypool.redate_late_sends:
            if not self._reported:
                self._reported_since = time.monotonic()
                if self._wake is not None:
                    self._wake.set()  # the loop then sets the deadline of the flush
            name = call_name(task_id, attempt)
            self._reported[name] = max(at, self._reported.get(name, at))

    async def report(self, pool_name: str, failure: CallFailure) -> None:
        """Learn from a refused call: cool down, park, disable a key or change the rate; writes key events.

        Returns once the events are written and the pool's state changed, so the caller's
        next token already respects it.
        """
        await self._ensure()
        assert self._lock is not None and self._wake is not None
        async with self._lock:
            pool = self._state.pools.get(pool_name)
            if pool is None:
                return
            events = learn(pool, failure, time.time())
            for event in events:
                log.warning("key pool changed", key_event=event.type, pool=pool_name, key_id=failure.key_id)
            if events:
                await self._append(events)
        self._wake.set()

    async def calls(self) -> dict[str, int]:
        """How often each hot-path method was called since the start (and `sends`: reports carried)."""
        return dict(self._calls)

    async def pid(self) -> int:
        """The actor's process id (tests watch it change across a restart)."""
        return os.getpid()

    async def recovery(self) -> dict[str, Any]:
        """Where the last start-up took its state from: the snapshot's stream id, events replayed,
        grants dated at the start, and the pools as recovered."""
        await self._ensure()
        return dict(self._recovery)

    async def status(self) -> list[dict[str, Any]]:
        """Each pool's limits, learned rate, tokens left, cooldown, parking and disabled keys."""
        await self._ensure()
        now = time.time()
        return [p.describe(now, len(self._line)) for p in self._pools]
