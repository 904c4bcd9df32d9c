"""Burst N tasks at genqueue over HTTP and print makespan, the bound, efficiency and latencies.

By default it starts its own genqueue (embedded Valkey, local Ray, offline provider) with
the given slots, latency and pools, and afterwards audits the event log: most tasks
running at once, most calls of each pool in any window, tasks lost or ended twice, and
dispatch latency (an outcome event to the next dispatch event, from stream ids).
With --url it bursts at a running instance instead (no log audit).

    python bench/burst.py --users 600 --slots 20 --latency 0.5 --pools 3x600 --window 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.config import Config, PoolConfig, ProviderConfig, QueueConfig, Secret
from events.audit import audit
from events.redis_store import RedisEventStore
from serve_app.burst import BurstResult, bound_seconds, percentile, run_burst


def parse_pools(spec: str, window: float) -> tuple[PoolConfig, ...]:
    """'3x600' -> three pools at 600 RPM."""
    count, _, rpm = spec.partition("x")
    return tuple(
        PoolConfig(name=f"pool-{i + 1}", rpm=int(rpm), keys=(Secret(f"bench-{i}"),), window_seconds=window)
        for i in range(int(count))
    )


def report(
    result: BurstResult, users: int, slots: int, latency: float, rpm_total: float
) -> dict[str, object]:
    """The figures of one burst."""
    bound = bound_seconds(users, slots, latency, rpm_total)
    waits = result.waits()
    return {
        "users": users,
        "succeeded": result.count("succeeded"),
        "failed": result.count("failed"),
        "rejected": result.rejected,
        "makespan_s": round(result.makespan, 3),
        "bound_s": round(bound, 3),
        "efficiency": round(bound / result.makespan, 3) if result.makespan else 0.0,
        "submit_p50_ms": round(1000 * percentile(result.submit_latencies, 50), 1),
        "submit_p99_ms": round(1000 * percentile(result.submit_latencies, 99), 1),
        "wait_p50_s": round(percentile(waits, 50), 3),
        "wait_p99_s": round(percentile(waits, 99), 3),
        "eta_error_median": round(percentile(result.eta_errors(), 50), 3),
        "eta_error_p90": round(percentile(result.eta_errors(), 90), 3),
        "eta_samples": len(result.eta_errors()),
        "sse_messages_per_task": round(
            sum(result.sse_messages.values()) / max(1, len(result.sse_messages)), 1
        ),
        "sse_delay_p50_ms": round(1000 * percentile(result.sse_delays, 50), 1),
        "sse_delay_p99_ms": round(1000 * percentile(result.sse_delays, 99), 1),
    }


async def audit_log(config: Config) -> dict[str, object]:
    """What the event log says about the run."""
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    try:
        events = await store.read_range()
    finally:
        await store.close()
    r = audit(events)
    lat = [float(x) for x in r.dispatch_latency_ms]
    return {
        "log_ok": r.ok,
        "lost": len(r.never_ended),
        "ended_twice": len(r.ended_twice),
        "max_running": r.max_running,
        "max_calls_in_any_window": r.max_window_calls,
        "window_capacity": r.window_capacity,
        "dispatch_latency_p50_ms": percentile(lat, 50),
        "dispatch_latency_p99_ms": percentile(lat, 99),
        "dispatch_latency_samples": len(lat),
    }


def main() -> None:
    """Parse arguments, run the burst, print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--slots", type=int, default=20)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--pools", default="3x600", help="COUNTxRPM")
    p.add_argument("--window", type=float, default=1.0, help="rolling window, seconds")
    p.add_argument("--kind", default="photography", choices=["photography", "fitting", "mixed"])
    p.add_argument("--image-size", default="1K", choices=["512", "1K", "2K"])
    p.add_argument("--url", help="burst at a running instance instead of starting one")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--watch", type=int, default=0, help="follow the last N tasks over SSE")
    args = p.parse_args()
    pools = parse_pools(args.pools, args.window)
    rpm_total = sum(x.rpm for x in pools)
    if args.url:
        result = asyncio.run(run_burst(args.url, args.users, args.kind, poll=0.25, watch_last=args.watch))
        figures = report(result, args.users, args.slots, args.latency, rpm_total)
    else:
        from serve_app.runtime import running

        base = Config()
        config = replace(
            base,
            redis=replace(base.redis, namespace=f"bench-{uuid.uuid4().hex[:8]}"),
            queue=QueueConfig(slots=args.slots, lease_seconds=120, max_attempts=3, workers=2),
            provider=ProviderConfig(
                name="offline",
                latency_seconds=args.latency,
                latency_jitter=args.jitter,
                image_size=args.image_size,
            ),
            pools=pools,
            server=replace(base.server, data_dir=tempfile.mkdtemp(prefix="genqueue-bench-"), port=8765),
        )
        with running(config, dashboard=False) as live:
            result = asyncio.run(
                run_burst(live.api_url, args.users, args.kind, poll=0.25, watch_last=args.watch)
            )
            figures = report(result, args.users, args.slots, args.latency, rpm_total)
            figures.update(asyncio.run(audit_log(live.config)))
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>28}  {v}")


if __name__ == "__main__":
    main()
