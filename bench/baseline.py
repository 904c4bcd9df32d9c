"""The classic cloud-function design as a baseline, against the same Gemini emulator as genqueue.

What many apps run before they need a queue: a scheduled function (the "queue manager")
wakes every 30 s, starts up to `slots - running` waiting tasks, each with an API key picked
at random from all keys, and marks a task failed when its call comes back 429 (no rate
limiting, no retries). Time is scaled like the pools' window: the manager wakes every
30 s x window / 60 s. The first wake-up is at the moment of the burst (the real design
waits up to a whole period for it).

The calls go through genqueue's own gemini provider (the google-genai client, SDK retries
off) to a `genqueue emulator` process; the figures are the makespan (the burst to the last
task's end, failed or not), the tasks that failed, and the 429s the emulator counted.

    python bench/baseline.py --users 60 --slots 40 --pools 3x150 --window 6 --latency 2
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.config import ProviderConfig, Secret
from actors.providers.base import ImageRequest, ProviderError
from actors.providers.gemini import GeminiProvider
from actors.providers.images import sample_selfie
from bench.common import bench_pools, emulator_process, print_figures, upstream_counts


async def classic(
    provider: GeminiProvider, users: int, slots: int, period: float, keys: list[Secret], seed: int = 1
) -> dict[str, object]:
    """Run the manager until every task has ended; the makespan and each task's outcome."""
    rng = random.Random(seed)
    requests = [
        ImageRequest(f"t{i}", "photography", "studio portrait", {"person": sample_selfie(i)})
        for i in range(users)
    ]
    waiting = list(reversed(requests))
    running: set[asyncio.Task[None]] = set()
    outcomes: Counter[str] = Counter()
    ends: list[float] = []

    async def call(request: ImageRequest, key: Secret) -> None:
        try:
            await provider.generate(request, key)
            outcomes["succeeded"] += 1
        except ProviderError as exc:
            outcomes[f"failed {exc.code or 'no answer'}"] += 1
        ends.append(time.monotonic())

    t0 = time.monotonic()
    wake = t0
    while waiting:
        for _ in range(min(slots - len(running), len(waiting))):
            task = asyncio.create_task(call(waiting.pop(), rng.choice(keys)))
            running.add(task)
            task.add_done_callback(running.discard)
        wake += period
        await asyncio.sleep(max(0.0, wake - time.monotonic()))
    await asyncio.gather(*running)
    await provider.aclose()
    return {
        "users": users,
        "succeeded": outcomes["succeeded"],
        "failed": users - outcomes["succeeded"],
        "outcomes": dict(outcomes),
        "makespan_s": round(max(ends) - t0, 3),
        "manager_wakeups": round((wake - t0) / period),
    }


def main() -> None:
    """Start the emulator, run the classic design once, print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--slots", type=int, default=40)
    p.add_argument("--pools", default="3x150", help="COUNTxRPM")
    p.add_argument("--window", type=float, default=6.0, help="the quota window, seconds")
    p.add_argument("--latency", type=float, default=2.0)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--period", type=float, default=30.0, help="the manager's period at a 60 s window")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args()
    count, _, rpm = args.pools.partition("x")
    pools = bench_pools(int(count), int(rpm), args.window)
    keys = [k for pool in pools for k in pool.keys]
    with emulator_process(pools, args.window, args.latency, args.jitter) as url:
        provider = GeminiProvider(
            ProviderConfig(name="gemini", base_url=url, timeout_seconds=30, image_size="512")
        )
        provider.prepare(keys)
        period = args.period * args.window / 60.0
        figures = asyncio.run(classic(provider, args.users, args.slots, period, keys))
        figures.update(upstream_counts(url))
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
