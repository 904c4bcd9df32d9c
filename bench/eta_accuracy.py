"""ETA accuracy at submit: each task's `eta_seconds` (p50) and `eta_p90_seconds` against the real
start of its upstream call, in three scenarios run through HTTP with the offline provider.

    python bench/eta_accuracy.py [--scenario default burst-600 slot-bound] [--scale 1] [--json]

Scenarios (`--scale 10` runs each ten times faster: windows and calls shortened, budgets kept):
  default     the default configuration's 100-user burst: 3 pools x 15 calls per 60 s, 40 slots,
              2 s calls +- 0.5 s (the `[provider]` defaults)
  burst-600   600 users, 20 slots, 3 x 600 RPM over 1 s windows, 0.5 s calls
  slot-bound  200 users, 10 slots of 1 s calls +- 0.25 s, a budget that never binds

The error of one task: its predicted wait P (`eta_seconds` in the 202 answer) against its actual
wait A, from the moment the answer arrived to the `at` of its first `task.started` in the log
(one clock: the client runs on the same machine): |P - A| / max(A, 1 s). A wait shorter than
the 1 s floor is judged by its absolute error in seconds, so that a task told 0.1 s that
started after 0.3 s counts 20 %, not 200 %. The figures are the median and the 90th percentile
of that error over every task, the share of tasks whose call started by their
`eta_p90_seconds` (a calibrated p90 covers about 90 %), and the same error for the forecast
genqueue used before its ETA range (`old_model_error_*`): `forecast.eta_seconds` fed the
position, the running count, the pools' grants and the held-time counters as the log stood when
each answer arrived, replayed on the same run. The replica that served it read the pools through
a 0.2 s cache and the counts of the submit's own transaction, so what it answered could differ
either way: the model misses the tokens that dispatched tasks still need, and whether that
shows depends on whether their grants had landed when it read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import httpx

from actors.config import Config, KeyPoolConfig, ProviderConfig
from actors.forecast import PoolWindow, call_latency, eta_seconds, slot_hold, window_capacity
from bench.common import bench_config, bench_pools, free_port, own_serve_ports, print_figures
from events.catalogue import TERMINAL, StoredEvent
from events.redis_store import RedisEventStore
from serve_app.cli.burst import payload, percentile
from tests.helpers import make_config

# Waits shorter than this are judged by their absolute error (seconds) instead of a relative one.
FLOOR_SECONDS = 1.0
# The events after which a task no longer holds its slot.
SLOT_ENDS = (
    "task.succeeded",
    "task.attempt_failed",
    "task.lease_expired",
    "task.upstream_throttled",
    "task.expired",
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A burst: `users` submits at once against `pools` pools of `rpm` over `window` seconds."""

    name: str
    users: int
    slots: int
    pools: int
    rpm: int
    window: float
    latency: float
    jitter: float
    margin: float = KeyPoolConfig().margin_seconds
    workers: int = 2

    def scaled(self, factor: float, users: int | None = None) -> Scenario:
        """The same shape `factor` times faster: windows and calls shortened, budgets per window
        kept (so the RPM grows by `factor`); `users` replaces the count when given."""
        return replace(
            self,
            users=users or self.users,
            rpm=round(self.rpm * factor),
            window=self.window / factor,
            latency=self.latency / factor,
            jitter=self.jitter / factor,
        )

    def config(self, redis_url: str = "", data_dir: str = "") -> Config:
        """A whole instance for the scenario on a free port, offline provider answering a stock
        image; on the Redis at `redis_url` (default: an embedded one of its own)."""
        provider = ProviderConfig(
            name="offline",
            latency_seconds=self.latency,
            latency_jitter=self.jitter,
            image_size="512",
            render=False,
        )
        pools = bench_pools(self.pools, self.rpm, self.window)
        keypool = KeyPoolConfig(margin_seconds=self.margin)
        if not redis_url:
            return bench_config(pools, self.slots, provider, keypool, workers=self.workers)
        return make_config(
            redis_url,
            data_dir,
            slots=self.slots,
            workers=self.workers,
            port=free_port(),
            provider=provider,
            pool_configs=pools,
            keypool=keypool,
        )


SCENARIOS = {
    "default": Scenario("default", 100, 40, 3, 15, 60.0, 2.0, 0.5),
    "burst-600": Scenario("burst-600", 600, 20, 3, 600, 1.0, 0.5, 0.0),
    "slot-bound": Scenario("slot-bound", 200, 10, 1, 60_000, 60.0, 1.0, 0.25),
}


@dataclass(frozen=True, slots=True)
class Promise:
    """What one submit's answer promised, and when it arrived."""

    task_id: str
    p50: float | None
    p90: float | None
    position: int | None
    answered: float


def error(predicted: float, actual: float, floor: float = FLOOR_SECONDS) -> float:
    """|predicted - actual| / max(actual, floor): relative to the actual wait, and for waits
    shorter than `floor` the absolute error in units of `floor`."""
    return abs(predicted - actual) / max(actual, floor)


async def submit_all(url: str, users: int) -> list[Promise]:
    """Submit `users` tasks at once (each simulated user connected before it presses); what
    each accepted submit's answer promised."""
    bodies = [json.dumps(payload(i, "photography")).encode() for i in range(users)]
    promises: list[Promise] = []
    async with aiohttp.ClientSession(
        url, connector=aiohttp.TCPConnector(limit=users), timeout=aiohttp.ClientTimeout(total=120)
    ) as client:
        await asyncio.gather(*(client.get("/healthz") for _ in range(users)))

        async def submit(body: bytes) -> None:
            headers = {"Content-Type": "application/json"}
            async with client.post("/v1/tasks", data=body, headers=headers) as r:
                answer = await r.json(content_type=None)
            if r.status == 202:
                got = answer.get
                promises.append(
                    Promise(
                        answer["task_id"],
                        got("eta_seconds"),
                        got("eta_p90_seconds"),
                        got("position"),
                        time.time(),
                    )
                )

        pending = []
        for body in bodies:
            pending.append(asyncio.create_task(submit(body)))
            await asyncio.sleep(0)  # each request on the wire before the next is built
        await asyncio.gather(*pending)
    return promises


def all_ended(url: str, count: int) -> bool:
    """Whether `count` tasks have ended on the instance at `url`."""
    queue = httpx.get(f"{url}/v1/queue", timeout=10).json()
    ended: int = sum(queue.get(k, 0) for k in TERMINAL)
    return ended >= count


async def read_log(config: Config) -> list[StoredEvent]:
    """Every event of the run."""
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    try:
        return await store.read_range()
    finally:
        await store.close()


class OldEta:
    """The ETA genqueue gave before its range (`forecast.eta_seconds`), from the log as it stood
    at each moment asked, in time order: the running count, the held-time counters and the
    pools' grants then."""

    def __init__(self, events: list[StoredEvent], config: Config) -> None:
        self.events, self.config, self.next = events, config, 0
        self.running: set[str] = set()
        self.stats = {"elapsed_sum": 0.0, "elapsed_count": 0.0, "held_sum": 0.0, "held_count": 0.0}
        self.grants: dict[str, list[float]] = {p.name: [] for p in config.pools}

    def at(self, at: float, position: int) -> float:
        """The old ETA of the task at `position` at time `at` (not before the last asked)."""
        while self.next < len(self.events) and self.events[self.next].event.at <= at:
            e: Any = self.events[self.next].event
            self.next += 1
            if e.type == "task.dispatched":
                self.running.add(e.task_id)
            elif e.type in SLOT_ENDS or e.type == "task.failed":
                self.running.discard(e.task_id)
            if e.type == "task.succeeded":
                self.stats["elapsed_sum"] += e.elapsed
                self.stats["elapsed_count"] += 1
                if e.held:
                    self.stats["held_sum"] += e.held
                    self.stats["held_count"] += 1
            elif e.type == "key.token_granted":
                self.grants[e.pool].append(e.at)
        config = self.config
        latency = call_latency(self.stats, config.provider.latency_seconds)
        windows = [
            PoolWindow(
                window_capacity(p.rate, p.window_seconds),
                p.window_seconds + config.keypool.margin_seconds,
                tuple(g for g in self.grants[p.name] if g > at - p.window_seconds),
            )
            for p in config.pools
        ]
        hold = slot_hold(self.stats, latency)
        return max(0.0, eta_seconds(position, at, config.queue.slots, len(self.running), hold, windows))


def figures(promises: list[Promise], events: list[StoredEvent], config: Config) -> dict[str, Any]:
    """Median and p90 error of the p50 (now and as before), and the p90's coverage."""
    started: dict[str, float] = {}
    submitted: dict[str, float] = {}
    for stored in events:
        e: Any = stored.event
        if e.type == "task.started":
            started.setdefault(e.task_id, e.at)
        elif e.type == "task.submitted":
            submitted[e.task_id] = e.at
    errors, old, errors90, covered, waits = [], [], [], 0, []
    replay = OldEta(events, config)
    for p in sorted(promises, key=lambda p: p.answered):
        if p.p50 is None or p.task_id not in started:
            continue
        wait = max(0.0, started[p.task_id] - p.answered)
        waits.append(wait)
        errors.append(error(p.p50, wait))
        if p.position is not None:
            old.append(error(replay.at(p.answered, p.position), wait))
        if p.p90 is not None:
            errors90.append(error(p.p90, wait))
            covered += wait <= p.p90 + 0.05  # the answer's rounding
    n = len(errors)
    late = [p.answered - submitted[p.task_id] for p in promises if p.task_id in submitted]
    return {
        "tasks": len(promises),
        "measured": n,
        "eta_error_median": round(statistics.median(errors), 4) if errors else None,
        "eta_error_p90": round(percentile(errors, 90), 4) if errors else None,
        "eta_error_max": round(max(errors), 4) if errors else None,
        "started_by_p90": round(covered / len(errors90), 3) if errors90 else None,
        "p90_error_median": round(statistics.median(errors90), 4) if errors90 else None,
        "old_model_error_median": round(statistics.median(old), 4) if old else None,
        "old_model_error_p90": round(percentile(old, 90), 4) if old else None,
        "answer_after_submit_p90_s": round(percentile(late, 90), 3),
        "wait_p50_s": round(percentile(waits, 50), 3),
        "wait_max_s": round(max(waits, default=0.0), 3),
    }


def dump(path: Path, events: list[StoredEvent], promises: list[Promise]) -> None:
    """Write a run's events and promises, one JSON line each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"type": s.event.type, **asdict(s.event)}) for s in events]
    lines += [json.dumps({"type": "promise", **asdict(p)}) for p in promises]
    path.write_text("\n".join(lines) + "\n")


def run(scenario: Scenario, out: Path | None = None) -> dict[str, Any]:
    """Start genqueue for `scenario`, burst, wait for every task to end, measure, stop."""
    from serve_app.runtime import running

    own_serve_ports()
    with running(scenario.config(), dashboard=False) as live:
        promises = asyncio.run(submit_all(live.api_url, scenario.users))
        deadline = time.monotonic() + 10 * scenario.users / (scenario.rpm * scenario.pools / 60) + 120
        while not all_ended(live.api_url, len(promises)) and time.monotonic() < deadline:
            time.sleep(0.2)
        events = asyncio.run(read_log(live.config))
        if out is not None:
            dump(out / f"{scenario.name}-{live.config.redis.namespace}.jsonl", events, promises)
        return {"scenario": scenario.name, **figures(promises, events, live.config)}


def main() -> None:
    """Parse arguments, run the scenarios, print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--scale", type=float, default=1.0, help="run this many times faster")
    p.add_argument("--users", type=int, default=None, help="users in each burst (default: the scenario's)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--dump", type=Path, help="write each run's events and promises to this directory")
    args = p.parse_args()
    results = {}
    for name in args.scenario:
        results[name] = run(SCENARIOS[name].scaled(args.scale, args.users), args.dump)
        if not args.json:
            print_figures(results[name], False)
            print()
    if args.json:
        print_figures(
            {f"{n}_{k}": v for n, r in results.items() for k, v in r.items() if k != "scenario"}, True
        )


if __name__ == "__main__":
    main()
