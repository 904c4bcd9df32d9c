"""Burst N tasks at genqueue over HTTP and print makespan, the bound, efficiency and latencies.

By default it starts its own genqueue (embedded Valkey, local Ray, offline provider) with
the given slots, latency and pools, and afterwards audits the event log: most tasks
running at once, most calls of each pool in any window, tasks lost or ended twice, and
dispatch latency (an outcome event to the next dispatch event, from stream ids).
With --url it bursts at a running instance instead (no log audit).

With --provider gemini the calls go through the google-genai client to a `genqueue emulator`
started as its own process, whose projects enforce --real-rpm (default: the configured
RPM) over the same window; the emulator's own counts of calls and 429s are reported.
With --kill-keypool-at the KeyPoolActor is crashed (Ray restarts it) at those seconds after the
burst's first submit.

    python bench/burst.py --users 600 --slots 20 --latency 0.5 --pools 3x600 --window 1
    python bench/burst.py --provider gemini --pools 3x900 --real-rpm 600 --image-size 512
    python bench/burst.py --provider gemini --pools 3x600 --image-size 512 --kill-keypool-at 4,9,14
    python bench/burst.py --provider gemini --pools 3x600 --image-size 512 --deadline 10

With --deadline every --deadline-every-th task (default: half of them) must start within that
many seconds; the log then shows which expired, that they made no call and got their credits
back, and how efficiently the tasks that ran used the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.audit import audit
from actors.config import Config, CreditsConfig, KeyPoolConfig, PoolConfig, ProviderConfig
from actors.planner import PoolPlan, arrivals, simulate
from bench.common import (
    EMULATOR_NICE,
    add_client_nice,
    add_render,
    bench_config,
    bench_pools,
    emulator_process,
    lower_priority,
    own_serve_ports,
    print_figures,
    upstream_counts,
)
from bench.deadline_figures import deadline_figures
from events.catalogue import KeyLimitLearned, KeyTokenGranted, StoredEvent
from events.redis_store import RedisEventStore
from serve_app.cli.burst import BurstResult, bound_seconds, percentile, run_burst


def ideal_seconds(users: int, slots: int, latency: float, rpm: int, pools: int, window: float) -> float:
    """The planner's makespan for a burst with no margin: what FIFO under the slots and the
    rolling windows allows at best (a burst may take each window's whole budget at once)."""
    plans = tuple(PoolPlan(f"p{i}", rpm) for i in range(pools))
    return simulate(arrivals(users, "burst"), slots, latency, plans, window).makespan


def report(
    result: BurstResult, users: int, slots: int, latency: float, rpm_total: float, ideal: float
) -> dict[str, object]:
    """The figures of one burst."""
    bound = bound_seconds(users, slots, latency, rpm_total)
    waits = result.waits()
    makespan = result.makespan
    return {
        "users": users,
        "succeeded": result.count("succeeded"),
        "failed": result.count("failed"),
        "rejected": result.rejected,
        "makespan_s": round(makespan, 3),
        "tasks_per_second": round(result.count("succeeded") / makespan, 2) if makespan else 0.0,
        "submit_span_s": round(result.submits_answered - result.started, 3),
        "bound_s": round(bound, 3),
        "efficiency": round(bound / makespan, 3) if makespan else 0.0,
        "ideal_s": round(ideal, 3),
        "efficiency_vs_ideal": round(ideal / makespan, 3) if makespan else 0.0,
        "submit_first_ms": round(1000 * min(result.submit_latencies, default=0.0), 1),
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


async def read_log(config: Config) -> list[StoredEvent]:
    """The run's whole event log."""
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    try:
        return await store.read_range()
    finally:
        await store.close()


async def audit_log(config: Config) -> dict[str, object]:
    """What the event log says about the run."""
    events = await read_log(config)
    r = audit(events)
    lat = [float(x) for x in r.dispatch_latency_ms]
    learned = [e.event for e in events if isinstance(e.event, KeyLimitLearned)]
    grants: dict[str, list[tuple[float, int]]] = {}
    for e in events:
        if isinstance(e.event, KeyTokenGranted):
            grants.setdefault(e.event.pool, []).append((e.event.at, e.event.capacity))
    cycles = {}
    for pool, times in grants.items():
        gaps = sorted(times[k + cap][0] - t for k, (t, cap) in enumerate(times) if k + cap < len(times))
        cycles[pool] = round(gaps[len(gaps) // 2], 3) if gaps else 0.0
    first_submit = min((e.event.at for e in events if e.event.type == "task.submitted"), default=0.0)
    last_end = max(
        (e.event.at for e in events if e.event.type in ("task.succeeded", "task.failed")), default=0.0
    )
    all_grants = sorted(t for times in grants.values() for t, _ in times)
    granted_at = {
        (e.event.task_id, e.event.attempt): e.event.at for e in events if isinstance(e.event, KeyTokenGranted)
    }
    handoff = sorted(
        1000 * (e.event.at - granted_at[(e.event.task_id, e.event.attempt)])
        for e in events
        if e.event.type == "task.started" and (e.event.task_id, e.event.attempt) in granted_at
    )
    started_at = {
        (e.event.task_id, e.event.attempt): e.event.at for e in events if e.event.type == "task.started"
    }
    calls = sorted(
        e.event.at - started_at[(e.event.task_id, e.event.attempt)]
        for e in events
        if e.event.type == "task.succeeded" and (e.event.task_id, e.event.attempt) in started_at
    )
    return {
        "call_seconds_p10_p50_p90": [round(percentile(calls, q), 3) for q in (10, 50, 90)],
        "token_handoff_ms_p10_p50_p90": [round(percentile(handoff, q), 1) for q in (10, 50, 90)],
        "grant_cycle_median_s": cycles,
        "first_grant_after_s": round(all_grants[0] - first_submit, 3) if all_grants else None,
        "last_grant_to_last_end_s": round(last_end - all_grants[-1], 3) if all_grants else None,
        "first_submit_to_last_end_s": round(last_end - first_submit, 3),
        "limits_learned": [
            f"{e.pool}: {e.previous}->{e.rpm} margin {e.margin} ({e.reason[:40]})" for e in learned
        ],
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


def kill_keypool_at(config: Config, seconds: list[float]) -> tuple[threading.Thread, list[float]]:
    """Crash the KeyPoolActor at each of `seconds` after the burst's first submit, in a
    background thread; the list it returns fills with the times (from that submit) the kills
    were made."""
    import ray
    import redis

    from actors import factory
    from events.keys import Keys

    done: list[float] = []

    def run() -> None:
        stats = Keys(config.redis.namespace).stats
        with redis.Redis.from_url(config.redis.url) as client:
            while not client.hget(stats, "submitted"):
                time.sleep(0.005)
        start = time.monotonic()
        for at in sorted(seconds):
            time.sleep(max(0.0, start + at - time.monotonic()))
            ray.kill(factory.get(config, factory.KEYPOOL_NAME), no_restart=False)
            done.append(round(time.monotonic() - start, 2))

    thread = threading.Thread(target=run, name="kill-keypool", daemon=True)
    thread.start()
    return thread, done


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
    add_render(p)
    p.add_argument("--url", help="burst at a running instance instead of starting one")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--provider", default="offline", choices=["offline", "gemini"])
    p.add_argument("--real-rpm", type=int, default=0, help="the emulator's RPM per project (gemini)")
    p.add_argument("--keys", type=int, default=1, help="keys per pool")
    p.add_argument("--day-quota", type=int, default=0, help="requests per day of pool-1 upstream (gemini)")
    p.add_argument("--margin", type=float, default=None, help="keypool.margin_seconds")
    p.add_argument("--replicas", type=int, default=1, help="Serve ingress replicas")
    p.add_argument("--no-redate", action="store_true", help="keypool.redate_late_sends = false")
    p.add_argument(
        "--kill-keypool-at",
        default="",
        help="comma-separated seconds into the burst at which to crash the KeyPoolActor, e.g. 4,9,14",
    )
    add_client_nice(p, "the burst client")
    p.add_argument(
        "--emulator-nice",
        type=int,
        default=EMULATOR_NICE,
        help="niceness of the emulator (gemini): it stands for an upstream on machines of its own "
        "(0: leave it)",
    )
    p.add_argument("--watch", type=int, default=0, help="follow the last N tasks over SSE")
    p.add_argument("--deadline", type=float, default=0.0, help="seconds: a deadline for some tasks")
    p.add_argument(
        "--deadline-every", type=int, default=2, help="every Nth task carries --deadline (2: half)"
    )
    args = p.parse_args()
    count, _, rpm_text = args.pools.partition("x")
    pools = bench_pools(int(count), int(rpm_text), args.window, args.keys)
    # The bound is set by what upstream really allows.
    real_rpm = args.real_rpm or int(rpm_text)
    rpm_total = real_rpm * len(pools)
    ideal = ideal_seconds(args.users, args.slots, args.latency, real_rpm, len(pools), args.window)
    if args.url:
        result = asyncio.run(run_burst(args.url, args.users, args.kind, poll=0.25, watch_last=args.watch))
        figures = report(result, args.users, args.slots, args.latency, rpm_total, ideal)
    else:
        figures = burst_here(args, pools, rpm_total, ideal)
    print_figures(figures, args.json)


def burst_here(
    args: argparse.Namespace, pools: tuple[PoolConfig, ...], rpm_total: int, ideal: float
) -> dict[str, object]:
    """Start genqueue (and the emulator for --provider gemini), burst, audit the log, stop."""
    from serve_app.runtime import running

    own_serve_ports()
    with contextlib.ExitStack() as stack:
        emulator_url = ""
        if args.provider == "gemini":
            emulator_url = stack.enter_context(
                emulator_process(
                    pools,
                    args.window,
                    args.latency,
                    args.jitter,
                    args.real_rpm,
                    args.day_quota,
                    nice=args.emulator_nice,
                )
            )
        base = KeyPoolConfig()
        config = bench_config(
            pools,
            args.slots,
            ProviderConfig(
                name=args.provider,
                base_url=emulator_url,
                latency_seconds=args.latency,
                latency_jitter=args.jitter,
                # The ETA's call time until one is measured: the emulator's, as an operator who
                # knows upstream's would set it (gemini's default assumes 10 s).
                expected_call_seconds=args.latency,
                image_size=args.image_size,
                timeout_seconds=30,
                render=args.render,
            ),
            keypool=replace(
                base,
                margin_seconds=base.margin_seconds if args.margin is None else args.margin,
                redate_late_sends=not args.no_redate,
            ),
            replicas=args.replicas,
            # Deadlines: each user is charged, so that what an expiry refunds can be checked.
            credits=CreditsConfig(default_grant=10) if args.deadline else None,
        )
        with running(config, dashboard=False) as live:
            lower_priority(args.client_nice)
            kills = [float(s) for s in args.kill_keypool_at.split(",") if s.strip()]
            killer, killed = kill_keypool_at(live.config, kills) if kills else (None, [])
            deadline = args.deadline

            def task_deadline(i: int) -> float | None:
                return deadline if deadline and i % args.deadline_every == 0 else None

            result = asyncio.run(
                run_burst(
                    live.api_url,
                    args.users,
                    args.kind,
                    poll=0.25,
                    watch_last=args.watch,
                    task_deadline=task_deadline,
                )
            )
            if killer is not None:
                killer.join()
            figures = report(result, args.users, args.slots, args.latency, rpm_total, ideal)
            if kills:
                figures["keypool_killed_at_s"] = killed
            figures.update(asyncio.run(audit_log(live.config)))
            if emulator_url:
                figures.update(upstream_counts(emulator_url))
            if deadline:
                log = asyncio.run(read_log(live.config))
                upstream = figures.get("upstream_calls")
                calls = int(upstream) if isinstance(upstream, int) else None
                figures["deadlines"] = deadline_figures(log, args.slots, args.latency, rpm_total, calls)
    return figures


if __name__ == "__main__":
    main()
