"""QueueActor restart time with a long history, with and without snapshots, and the audit's replay rate.

Writes a history straight into a fresh embedded Valkey (F finished tasks, four events
each, plus W waiting), then on a local Ray:
  1. starts the actors with snapshots disabled and times the QueueActor's recovery;
  2. kills it (crash, Ray restarts it) and times recovery again with no snapshot;
  3. lets it take a snapshot, kills it again and times the recovery from the snapshot;
and finally replays a log of E events through `genqueue audit`'s auditor for its rate.
With --archived S, the oldest share S of the history is first archived (segments written,
read back, recorded and trimmed from the stream, as the janitor does), so a recovery without
a snapshot reads the archive and then the stream. --json prints the figures as one JSON line.

    python bench/recovery.py --finished 249750 --waiting 1000 --archived 0.5 --audit-events 0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.config import Config, PoolConfig, ProviderConfig, QueueConfig, Secret
from bench.common import print_figures
from events.catalogue import (
    TaskDispatched,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from events.codec import encode
from events.redis_store import RedisEventStore


async def write_history(url: str, namespace: str, finished: int, waiting: int) -> int:
    """Append the history in large pipelines (stream only; the read models are not needed here)."""
    store = RedisEventStore.from_url(url, namespace)
    written = 0
    batch: list[dict[str, str]] = []

    async def flush() -> None:
        nonlocal written
        async with store._r.pipeline(transaction=False) as pipe:
            for fields in batch:
                pipe.xadd(store.keys.events, fields)
            await pipe.execute()
        written += len(batch)
        batch.clear()

    now = time.time()
    for i in range(finished + waiting):
        t = uuid.uuid4().hex
        events: list[Any] = [
            TaskSubmitted(
                task_id=t,
                user_id=f"u{i % 97}",
                kind="photography",
                prompt="p",
                inputs={"person": "x"},
                at=now,
            )
        ]
        if i < finished:
            events += [
                TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=now + 60, at=now),
                TaskStarted(task_id=t, attempt=1, pool="p", key_id="p#1", at=now),
                TaskSucceeded(task_id=t, attempt=1, result="r", mime_type="image/png", elapsed=0.5, at=now),
            ]
        batch += [encode(e) for e in events]
        if len(batch) >= 5000:
            await flush()
    await flush()
    await store.close()
    return written


def time_restart(queue: Any) -> tuple[float, dict[str, Any]]:
    """Kill the QueueActor as a crash would; seconds until a new process answers, and its status."""
    import ray

    old = ray.get(queue.pid.remote())
    t0 = time.perf_counter()
    ray.kill(queue, no_restart=False)
    while True:
        try:
            status: dict[str, Any] = ray.get(queue.status.remote(), timeout=60)
            if status["pid"] != old:
                return time.perf_counter() - t0, status
        except ray.exceptions.RayActorError:
            time.sleep(0.01)


async def audit_rate(url: str, namespace: str) -> tuple[int, float]:
    """(events, seconds) for the audit of a namespace."""
    from serve_app.cli.ops import run_audit

    t0 = time.perf_counter()
    result = await run_audit(url, namespace)
    return result.events, time.perf_counter() - t0


def main() -> None:
    """Build the history, time the restarts and the audit, print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--finished", type=int, default=100_000)
    p.add_argument("--waiting", type=int, default=1000)
    p.add_argument("--audit-events", type=int, default=1_000_000)
    p.add_argument("--archived", type=float, default=0.0, help="share of the history archived first")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line only")
    args = p.parse_args()
    say = (lambda _: None) if args.json else print
    figures: dict[str, Any] = {}

    import ray

    from actors import factory
    from serve_app.runtime import ray_environment, resolve
    from serve_app.valkey import embedded_valkey

    with embedded_valkey(Path(tempfile.mkdtemp(prefix="genqueue-recovery-"))) as url:
        base = Config()
        config = resolve(
            replace(
                base,
                redis=replace(base.redis, url=url, namespace="recovery"),
                queue=QueueConfig(
                    slots=1,
                    lease_seconds=3600,
                    max_attempts=3,
                    workers=1,
                    snapshot_every=10**9,
                    snapshot_seconds=10**9,
                ),
                provider=ProviderConfig(name="offline", latency_seconds=3600),
                pools=(PoolConfig(name="p", rpm=60, keys=(Secret("k"),), window_seconds=60),),
                server=replace(base.server, data_dir=tempfile.mkdtemp(prefix="genqueue-recovery-data-")),
            )
        )
        archive_dir = Path(config.server.data_dir) / "archive"
        t0 = time.perf_counter()
        events = asyncio.run(write_history(url, "recovery", args.finished, args.waiting))
        say(
            f"history: {args.finished:,} finished + {args.waiting:,} waiting tasks = {events:,} events "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        figures.update(events=events, archived_events=0)
        if args.archived > 0:
            from bench.replay_speed import archive_oldest
            from events.archive import Archive

            share = int(events * args.archived)
            archive = Archive(f"file://{archive_dir}")
            size = asyncio.run(archive_oldest(url, "recovery", archive, share, 100_000))
            say(f"archived: the oldest {share:,} events, {size / 1e6:.1f} MB, trimmed from the stream")
            figures.update(archived_events=share, archive_bytes=size)
        ray_environment()
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        try:
            handles = factory.start(config)
            queue = handles["queue"]
            first = ray.get(queue.status.remote())["recovery"]
            say(f"first start, no snapshot: recovery {first['seconds']:.2f} s, {first['replayed']:,} events")
            figures.update(
                first_start_recovery_seconds=first["seconds"], first_start_replayed=first["replayed"]
            )
            seconds, status = time_restart(queue)
            r = status["recovery"]
            say(
                f"restart without snapshot: {seconds:.2f} s to answer; recovery {r['seconds']:.2f} s, "
                f"{r['replayed']:,} events replayed"
            )
            figures.update(
                no_snapshot_answer_seconds=round(seconds, 2),
                no_snapshot_recovery_seconds=r["seconds"],
                no_snapshot_replayed=r["replayed"],
                no_snapshot_events_per_second=round(r["replayed"] / r["seconds"]) if r["seconds"] else None,
            )
            ray.get(queue.take_snapshot.remote())
            seconds, status = time_restart(queue)
            r = status["recovery"]
            say(
                f"restart with snapshot:    {seconds:.2f} s to answer; recovery {r['seconds']:.2f} s, "
                f"{r['replayed']:,} events replayed after snapshot {r['snapshot']}"
            )
            figures.update(
                snapshot_answer_seconds=round(seconds, 2),
                snapshot_recovery_seconds=r["seconds"],
                snapshot_replayed=r["replayed"],
            )
            factory.stop(config)
        finally:
            ray.shutdown()
        if args.audit_events:
            tasks = max(1, args.audit_events // 4)
            asyncio.run(write_history(url, "audit", tasks, 0))
            n, seconds = asyncio.run(audit_rate(url, "audit"))
            say(f"audit replay: {n:,} events in {seconds:.1f} s = {n / seconds:,.0f} events/s")
            figures.update(audit_events=n, audit_events_per_second=round(n / seconds))
    if args.json:
        print_figures(figures, True)


if __name__ == "__main__":
    main()
