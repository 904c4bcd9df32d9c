"""Memory per waiting task: how much the QueueActor's resident memory grows per 100,000 waiting tasks.

Starts the actors on a local Ray with one slot held by a call that never ends (so nothing
else starts), then appends `task.submitted` events straight to the stream in rounds of
--waiting tasks; after each round, once the QueueActor has applied every event, reads its
resident set size (VmRSS from /proc, Linux) and reports the growth per round.

    python bench/memory.py --waiting 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.blobs import FileBlobStore, task_blob
from actors.config import Config, ProviderConfig
from actors.providers.images import sample_selfie
from bench.common import bench_config, bench_pools, print_figures
from events.catalogue import TaskSubmitted
from events.codec import encode
from events.redis_store import RedisEventStore

PHOTO = task_blob("memory", "person.png")


async def append_waiting(url: str, namespace: str, count: int) -> str:
    """Append `count` submits (all with the same stored photo) in large pipelines; returns the
    last stream id."""
    store = RedisEventStore.from_url(url, namespace)
    try:
        now = time.time()
        for start in range(0, count, 5000):
            async with store._r.pipeline(transaction=False) as pipe:
                for i in range(start, min(count, start + 5000)):
                    event = TaskSubmitted(
                        task_id=uuid.uuid4().hex,
                        user_id=f"u{i % 997}",
                        kind="photography",
                        prompt="studio portrait",
                        inputs={"person": PHOTO},
                        at=now,
                    )
                    pipe.xadd(store.keys.events, encode(event))
                await pipe.execute()
        return await store.last_id()
    finally:
        await store.close()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process on this machine."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def wait_applied(queue: Any, last_id: str, timeout: float = 600) -> None:
    """Block until the QueueActor has applied the stream up to `last_id`."""
    import ray

    deadline = time.monotonic() + timeout
    target = tuple(int(x) for x in last_id.split("-"))
    while tuple(int(x) for x in ray.get(queue.ping.remote()).split("-")) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the QueueActor did not reach {last_id} within {timeout:.0f} s")
        time.sleep(0.2)


def measure(config: Config, waiting: int, rounds: int) -> dict[str, Any]:
    """RSS after a warm-up and after each round of `waiting` submits."""
    import ray

    from actors import factory

    url, namespace = config.redis.url, config.redis.namespace
    FileBlobStore(Path(config.server.data_dir) / "blobs").put(PHOTO, sample_selfie(1))
    handles = factory.start(config)
    try:
        queue = handles["queue"]
        pid = ray.get(queue.pid.remote())
        wait_applied(queue, asyncio.run(append_waiting(url, namespace, 1000)))  # warm-up, one starts
        sizes = [rss_bytes(pid)]
        for _ in range(rounds):
            wait_applied(queue, asyncio.run(append_waiting(url, namespace, waiting)))
            sizes.append(rss_bytes(pid))
        status = ray.get(queue.status.remote())
    finally:
        factory.stop(config)
    growth = [(b - a) / 2**20 for a, b in itertools.pairwise(sizes)]
    return {
        "waiting_per_round": waiting,
        "rss_mb": [round(s / 2**20, 1) for s in sizes],
        "growth_mb_per_round": [round(g, 1) for g in growth],
        "mb_per_100k_waiting": round(statistics.median(growth) * 100_000 / waiting, 1),
        "bytes_per_waiting_task": round(statistics.median(growth) * 2**20 / waiting),
        "waiting_at_end": status["waiting"],
        "running_at_end": status["running"],
    }


def main() -> None:
    """Start Valkey and Ray, measure, print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--waiting", type=int, default=100_000, help="submits per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args()

    import ray

    from serve_app.runtime import ray_environment, resolve
    from serve_app.valkey import embedded_valkey

    with embedded_valkey(Path(tempfile.mkdtemp(prefix="genqueue-memory-"))) as url:
        config = bench_config(
            bench_pools(1, 60, 60.0), 1, ProviderConfig(name="offline", latency_seconds=3600)
        )
        config = resolve(
            replace(
                config,
                redis=replace(config.redis, url=url, namespace=f"memory-{uuid.uuid4().hex[:6]}"),
                # Snapshots off: a snapshot of the whole queue would add its own garbage.
                queue=replace(config.queue, workers=1, snapshot_every=10**9, snapshot_seconds=10**9),
            )
        )
        ray_environment()
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False
        )
        try:
            figures = measure(config, args.waiting, args.rounds)
        finally:
            ray.shutdown()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
