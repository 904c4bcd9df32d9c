"""Test helpers: wait on a condition with a deadline, build events and configs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TypeVar

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from actors.config import (
    AlertsConfig,
    AuthConfig,
    Config,
    CreditsConfig,
    KeyPoolConfig,
    LaneConfig,
    PoolConfig,
    ProviderConfig,
    QueueConfig,
    Secret,
)
from events.catalogue import Event, StoredEvent, TaskSubmitted
from events.redis_store import RedisEventStore
from events.store import EventStore
from serve_app.http.gate import Places

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Call `check` until it returns something truthy, or fail after `timeout` seconds."""
    poll = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda value: not value),
        retry_error_callback=lambda _: None,
    )
    last: T | None = poll(check)
    if not last:
        raise AssertionError(f"condition not met within {timeout}s: {what or check}")
    return last


def submitted(
    task_id: str | None = None, at: float = 1.0, user: str = "u1", kind: str = "photography"
) -> TaskSubmitted:
    """A task.submitted event with plausible fields."""
    tid = task_id or uuid.uuid4().hex
    return TaskSubmitted(
        task_id=tid,
        user_id=user,
        kind=kind,
        prompt="p",
        inputs={"person": f"tasks/{tid}/person.png"},
        at=at,
    )


def make_config(
    redis_url: str,
    data_dir: str,
    *,
    slots: int = 4,
    latency: float = 0.05,
    jitter: float = 0.0,
    pools: tuple[tuple[str, int, float], ...] = (("p1", 600, 1.0),),
    lease_seconds: float = 60.0,
    max_attempts: int = 3,
    workers: int = 1,
    port: int = 8000,
    snapshot_every: int = 5000,
    alerts: AlertsConfig | None = None,
    provider: ProviderConfig | None = None,
    pool_configs: tuple[PoolConfig, ...] | None = None,
    keypool: KeyPoolConfig | None = None,
    auth: bool = False,
    credits: CreditsConfig | None = None,
    per_user_running: int = 0,
    per_user_waiting: int = 100_000,
    lanes: tuple[LaneConfig, ...] = (),
    gather_ms: float = QueueConfig().gather_ms,
    render: bool = False,
) -> Config:
    """A fast config on a fresh namespace: offline provider, short windows.

    The offline provider answers every call with its stock PNG unless `render` (a 1K portrait
    rendered with Pillow costs a worker about 60 ms of CPU, which a test would otherwise spend
    on Pillow rather than on genqueue). Tokens, credits and the per-user caps are off unless
    asked for."""
    base = Config()
    return replace(
        base,
        redis=replace(base.redis, url=redis_url, namespace=f"t{uuid.uuid4().hex[:10]}"),
        queue=QueueConfig(
            slots=slots,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            workers=workers,
            snapshot_every=snapshot_every,
            per_user_running=per_user_running,
            per_user_waiting=per_user_waiting,
            max_waiting=max(per_user_waiting, 100_000),
            gather_ms=gather_ms,
        ),
        provider=provider
        or ProviderConfig(name="offline", latency_seconds=latency, latency_jitter=jitter, render=render),
        pools=pool_configs
        or tuple(
            PoolConfig(name=n, rpm=rpm, keys=(Secret(f"k-{n}"),), window_seconds=w) for n, rpm, w in pools
        ),
        keypool=keypool or base.keypool,
        server=replace(base.server, data_dir=data_dir, port=port),
        alerts=alerts or AlertsConfig(),
        auth=AuthConfig(required=auth),
        credits=credits or CreditsConfig(enabled=False),
        lanes=lanes,
    )


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end from sync code, in a thread of its own when this thread
    already runs an event loop (Playwright's sync API does)."""

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def with_store(config: Config, use: Callable[[RedisEventStore], Awaitable[T]]) -> T:
    """Run `use` on a fresh client of the config's store, then close it."""

    async def main() -> T:
        store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
        try:
            return await use(store)
        finally:
            await store.close()

    return run_async(main)


async def snapshots_of(store: EventStore, actor: str) -> list[str]:
    """Every one of an actor's stored snapshots, newest first."""
    return [document async for document in store.snapshot_documents(actor)]


def append_to(config: Config, events: list[Event]) -> None:
    """Append events to the config's stream."""
    with_store(config, lambda store: store.append(events))


def log_of(config: Config) -> list[StoredEvent]:
    """The config's whole event log."""
    return with_store(config, lambda store: store.read_range())


class CountedPlaces(Places):
    """The submit gate's `Places`, counting the holders that have asked for a place, so that a
    test can wait until `n` have (`asked_by`) rather than for time to pass. A holder that finds
    no free place joins the line in the same step as it asks, so once `asked_by(n)` returns
    every one of them holds a place or waits in line."""

    def __init__(self, limit: int, weights: Mapping[str, float] | None = None) -> None:
        super().__init__(limit, weights)
        self.asked = 0
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    async def asked_by(self, n: int) -> None:
        """Return once `n` holders have asked (callers bound it with `asyncio.timeout`)."""
        if self.asked >= n:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((n, future))
        await future

    async def _enter(self, lane: str) -> None:
        self.asked += 1
        for n, future in self._watchers:
            if self.asked >= n and not future.done():
                future.set_result(None)
        await super()._enter(lane)
