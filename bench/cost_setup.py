"""The genqueue instances of bench/cost.py and what every phase asks of one: its config (tokens,
credits and submit rates on, rates too high to bind), tokens, the queue's counts, waiting until
it has drained, where the event stream stands."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from actors.config import AuthConfig, Config, CreditsConfig, ProviderConfig
from actors.providers.images import sample_selfie
from bench.common import bench_config, bench_pools, make_tokens, own_serve_ports
from events.catalogue import TERMINAL
from events.keys import Keys

CREDITS = 1_000_000_000  # a balance no run spends


def policy(config: Config, slots: int, per_user_running: int = 5) -> Config:
    """Tokens required, credits charged and submit rates counted, as in production, with rates
    and caps that do not bind; the fairness cap per user left at its default."""
    limits = replace(
        config.limits,
        user_submit_rate="10000/second",
        service_submit_rate="1000000/second",
        max_submits_per_token=1000,
    )
    queue = replace(config.queue, slots=slots, per_user_running=per_user_running)
    return replace(
        config,
        auth=AuthConfig(required=True),
        credits=CreditsConfig(enabled=True),
        limits=limits,
        queue=queue,
    )


def engine_config() -> Config:
    """The draining instance: the offline provider answering at once with a stock PNG, 40 slots,
    one pool of 10,000 calls a second (a pool's rpm is scaled to its window: 600,000 a minute
    over a 1 s window), which never binds here."""
    provider = ProviderConfig(
        name="offline", latency_seconds=0.0, latency_jitter=0.0, image_size="512", render=False
    )
    return policy(bench_config(bench_pools(1, 600_000, 1.0), 40, provider), slots=40)


def depth_config() -> Config:
    """The instance whose queue only fills: one slot, held by a call that does not end in the run."""
    provider = ProviderConfig(
        name="offline", latency_seconds=3600.0, latency_jitter=0.0, image_size="512", render=False
    )
    config = policy(bench_config(bench_pools(1, 5000, 1.0), 1, provider), slots=1)
    queue = replace(config.queue, lease_seconds=7200.0, max_waiting=1_000_000, per_user_waiting=1_000_000)
    return replace(config, queue=queue)


def burst600_config() -> Config:
    """burst-600 as `make bench` runs it (600 users, 20 slots, 3 pools of 600 calls a second,
    0.5 s calls), on the offline provider."""
    provider = ProviderConfig(
        name="offline", latency_seconds=0.5, latency_jitter=0.0, image_size="512", render=False
    )
    return policy(bench_config(bench_pools(3, 600, 1.0), 20, provider), slots=20)


@functools.cache
def _selfie(seed: int) -> str:
    """A selfie of the bench's as base64 (drawing one takes about 6 ms)."""
    return base64.b64encode(sample_selfie(seed)).decode()


def submit_body(user_id: str = "", seed: int = 7) -> bytes:
    """A photography submit with a generated selfie, drawn from `seed` (a service's item names
    its user)."""
    body: dict[str, Any] = {
        "kind": "photography",
        "prompt": "studio portrait, warm light",
        "images": {"person": _selfie(seed)},
    }
    if user_id:
        body["user_id"] = user_id
    return json.dumps(body).encode()


@dataclass(slots=True)
class Instance:
    """A running genqueue and an admin's view of it."""

    config: Config
    api_url: str
    admin: dict[str, str] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        """The store's URL."""
        return self.config.redis.url

    @property
    def stream(self) -> str:
        """The event stream's key."""
        return Keys(self.config.redis.namespace).events

    def tokens(self, users: list[str], role: str = "user") -> list[str]:
        """New tokens for `users`, each user granted a balance no run spends."""
        return make_tokens(self.redis_url, self.config.redis.namespace, users, role, CREDITS)

    def queue(self) -> dict[str, Any]:
        """GET /v1/queue."""
        answer = httpx.get(f"{self.api_url}/v1/queue", headers=self.admin, timeout=30)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    def wait_drained(self, timeout: float) -> bool:
        """Wait until nothing waits or runs and every submitted task has ended (False when
        `timeout` passed first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            q = self.queue()
            ended = sum(q.get(k, 0) for k in TERMINAL)
            if q["waiting"] == 0 and q["running"] == 0 and ended >= q["submitted"]:
                return True
            time.sleep(0.25)
        return False

    def last_id(self) -> str:
        """The id of the stream's newest entry ("0-0" when empty)."""
        import redis

        with redis.Redis.from_url(self.redis_url, decode_responses=True) as client:
            newest = client.xrevrange(self.stream, count=1)
        return str(newest[0][0]) if newest else "0-0"


def fresh_users(prefix: str, count: int) -> list[str]:
    """`count` user ids no run used before."""
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}-{tag}-{i}" for i in range(count)]


@contextlib.contextmanager
def instance(config: Config, dashboard: bool) -> Iterator[Instance]:
    """A whole genqueue (embedded Valkey, local Ray, Serve direct ingress behind HAProxy, as
    `genqueue up` runs it) with an admin token, for the block."""
    from serve_app.runtime import running

    own_serve_ports()
    with running(config, dashboard=dashboard) as live:
        inst = Instance(live.config, live.api_url)
        (token,) = inst.tokens(["bench-admin"], role="admin")
        inst.admin = {"Authorization": f"Bearer {token}"}
        yield inst


def fill(
    inst: Instance,
    count: int,
    users: list[str] | None = None,
    concurrency: int = 64,
    own_inputs: bool = False,
) -> float:
    """`count` tasks accepted straight by the store's submit (admission, fair place and read
    models as a submit over HTTP writes them; no HTTP, no charge), each of its own new user
    unless `users` are given; returns the seconds it took.

    With `own_inputs` each task's photo is written into its own folder first, as a submit
    writes it (tasks that will run: a worker then writes its result beside it); otherwise
    every task names one shared photo (tasks that only wait)."""
    from actors.blobs import blob_store, task_blob
    from events.admission import Admission
    from events.catalogue import TaskSubmitted
    from events.redis_store import RedisEventStore

    blobs = blob_store(inst.config)
    shared = task_blob("bench-cost", "person.png")
    selfie = sample_selfie(7)
    if not own_inputs:
        blobs.put(shared, selfie)
    owners = users or fresh_users("fill", count)

    async def run() -> None:
        store = RedisEventStore.from_url(
            inst.redis_url, inst.config.redis.namespace, max_connections=concurrency
        )
        lanes = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            task_id = uuid.uuid4().hex
            photo = shared
            if own_inputs:
                photo = blobs.put(task_blob(task_id, "person.png"), selfie)
            event = TaskSubmitted(
                task_id=task_id,
                user_id=owners[i % len(owners)],
                kind="photography",
                prompt="studio portrait",
                inputs={"person": photo},
                at=time.time(),
            )
            async with lanes:
                await store.submit(event, Admission())

        try:
            await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            await store.close()

    started = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - started
