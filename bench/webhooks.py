"""Completion webhooks under a burst: delivery delay after a task ends, and duplicates.

Starts a whole genqueue (embedded Valkey, local Ray, Serve) with the offline provider and a
real receiver on 127.0.0.1 that checks every signature, then twice submits a burst of N
tasks through a service token whose default webhook points at the receiver:

  1. the receiver answers 200: delay from the task's end (`finished_at`) to the webhook's
     arrival, p50/p99, and deliveries beyond one per task (must be 0);
  2. the receiver answers 500 to each webhook's first request: every webhook must arrive
     twice with one webhook-id, be answered 200 once, and be recorded delivered once.

    python bench/webhooks.py --tasks 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.config import Config, PoolConfig, ProviderConfig, Secret, WebhooksConfig
from actors.webhooks.rules import signing_secret, webhook_id
from events.catalogue import stream_id_ms
from events.redis_store import RedisEventStore
from serve_app.cli.burst import payload, percentile
from serve_app.http.auth import new_token
from serve_app.ports import free_port
from serve_app.runtime import Running, running
from tests.helpers import make_config
from tests.webhook_receiver import Receiver

SECRET = Secret("bench webhook secret")


async def burst(live: Running, headers: dict[str, str], n: int) -> list[str]:
    """Submit n tasks at once; their ids."""
    async with httpx.AsyncClient(base_url=live.api_url, timeout=120) as client:
        replies = await asyncio.gather(
            *(client.post("/v1/tasks", json=payload(i, "photography"), headers=headers) for i in range(n))
        )
    for reply in replies:
        assert reply.status_code == 202, reply.text
    return [str(r.json()["task_id"]) for r in replies]


async def settled(
    config: Config, ids: list[str], before: int, within: float
) -> tuple[dict[str, int], dict[str, float]]:
    """Wait until the counters show every task's webhook delivered or failed (`before` were
    already), then count each task's webhook.delivered events in the log, and find when each
    task's ending event reached the stream (its stream id's milliseconds)."""
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    deadline = time.monotonic() + within
    try:
        while (await finished_webhooks(store)) - before < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"webhooks still pending after {within:.0f} s")
            await asyncio.sleep(0.2)
        wanted = set(ids)
        delivered: Counter[str] = Counter()
        ended: dict[str, float] = {}
        for stored in await store.read_range():
            task = getattr(stored.event, "task_id", "")
            if task in wanted and stored.event.type == "webhook.delivered":
                delivered[task] += 1
            elif task in wanted and stored.event.type in ("task.succeeded", "task.failed"):
                ended[task] = stream_id_ms(stored.id) / 1000
        return dict(delivered), ended
    finally:
        await store.close()


async def finished_webhooks(store: RedisEventStore) -> int:
    """Webhooks delivered or failed so far, from the counters."""
    stats = (await store.counts()).stats
    return int(stats.get("webhooks_delivered", 0) + stats.get("webhooks_failed", 0))


def phase(live: Running, receiver: Receiver, path: str, n: int) -> dict[str, Any]:
    """One burst whose webhooks go to `path`: delays, requests per webhook id, deliveries recorded."""
    token, event = new_token("bench-app", "service", receiver.url(path))

    async def add_token() -> int:
        store = RedisEventStore.from_url(live.config.redis.url, live.config.redis.namespace)
        try:
            await store.append([event])
            return await finished_webhooks(store)
        finally:
            await store.close()

    before = asyncio.run(add_token())
    receiver.secrets.append(signing_secret(SECRET, event.token_id))
    started = time.perf_counter()
    ids = asyncio.run(burst(live, {"Authorization": f"Bearer {token}"}, n))
    recorded, in_stream = asyncio.run(settled(live.config, ids, before, within=300))
    elapsed = time.perf_counter() - started
    by_id = receiver.by_id(path)
    delays, appended, then = [], [], []
    for task_id in ids:
        hits = by_id.get(webhook_id(task_id), [])
        ok = [h for h in hits if h.answered == 200]
        if ok:
            delays.append(ok[0].at - float(ok[0].body["finished_at"]))
            appended.append(in_stream[task_id] - float(ok[0].body["finished_at"]))
            then.append(hits[0].at - in_stream[task_id])
    requests = [len(by_id.get(webhook_id(t), [])) for t in ids]
    return {
        "tasks": n,
        "seconds": round(elapsed, 1),
        "delay_p50_ms": round(percentile(delays, 50) * 1000, 1),
        "delay_p99_ms": round(percentile(delays, 99) * 1000, 1),
        "delay_max_ms": round(max(delays, default=0.0) * 1000, 1),
        # The delay's parts: the ending event's append, then stream to the first request.
        "end_to_stream_p50_ms": round(percentile(appended, 50) * 1000, 1),
        "stream_to_first_request_p50_ms": round(percentile(then, 50) * 1000, 1),
        "stream_to_first_request_p99_ms": round(percentile(then, 99) * 1000, 1),
        "requests_per_task": dict(sorted(Counter(requests).items())),
        "answered_200_beyond_one": sum(
            max(0, sum(h.answered == 200 for h in by_id.get(webhook_id(t), [])) - 1) for t in ids
        ),
        "ids_per_task": max(
            (len({h.webhook_id for h in by_id.get(webhook_id(t), [])}) for t in ids), default=0
        ),
        "unverified": sum(not h.verified for hits in by_id.values() for h in hits),
        "recorded_delivered": dict(sorted(Counter(recorded.values()).items())),
    }


def main() -> None:
    """Run both phases and print their figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--slots", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.2, help="offline provider call, seconds")
    args = parser.parse_args()
    for name in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT"):
        os.environ.setdefault(name, str(free_port()))
    with tempfile.TemporaryDirectory() as tmp:
        base = make_config("", tmp, slots=args.slots, port=free_port(), auth=True)
        config = replace(
            base,
            provider=ProviderConfig(name="offline", latency_seconds=args.latency, latency_jitter=0.0),
            pools=(PoolConfig(name="p1", rpm=600_000, keys=(Secret("k-p1"),), window_seconds=1.0),),
            webhooks=WebhooksConfig(secret=SECRET, allow_networks=("127.0.0.0/8",)),
        )
        with Receiver(codes={"/once": [500]}) as receiver, running(config, dashboard=False) as live:
            print(f"burst of {args.tasks}, slots {args.slots}, call {args.latency} s, backoff base 1 s")
            for path, what in (("/ok", "receiver answers 200"), ("/once", "receiver answers 500 once")):
                print(f"{what}: {phase(live, receiver, path, args.tasks)}", flush=True)


if __name__ == "__main__":
    main()
