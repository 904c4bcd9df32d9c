"""The cost of authenticating one request: a store read per request against the replica's token cache.

Starts an embedded Valkey (or uses --redis-url), stores one token, and times `authenticate`
for N requests in a row, sequentially and 64 at a time: with a cache that keeps nothing (a
HGETALL per request, as before the cache) and with the replica's cache. Prints wall and CPU
microseconds per request and the HGETALL calls the server counted.

    python bench/auth_cache.py [--requests 5000] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis

from events.redis_store import RedisEventStore
from serve_app.http.auth import TokenCache, authenticate, new_token
from serve_app.valkey import embedded_valkey


@contextlib.contextmanager
def store_url(given: str | None) -> Iterator[str]:
    """The given Redis URL, or an embedded Valkey's for the run."""
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory() as data, embedded_valkey(Path(data)) as url:
        yield url


async def run(url: str, requests: int) -> None:
    """Time both ways and print them."""
    store = RedisEventStore.from_url(url, f"bench-auth-{uuid.uuid4().hex[:8]}")
    probe = aioredis.from_url(url)
    secret, made = new_token("alice", "user")
    await store.append([made])
    header = f"Bearer {secret}"
    print(f"{'':44} {'wall/request':>13} {'CPU/request':>12} {'HGETALLs':>9}")
    try:
        for name, cache in (
            ("store read per request (before)", TokenCache(ttl=0.0)),
            ("token cache", TokenCache()),
        ):
            for width in (1, 64):
                stats = await probe.info("commandstats")
                calls = int(stats.get("cmdstat_hgetall", {}).get("calls", 0))
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(requests // width):
                    await asyncio.gather(
                        *(authenticate(store, header, True, cache=cache) for _ in range(width))
                    )
                done = requests // width * width
                wall, cpu = (time.perf_counter() - wall) / done, (time.process_time() - cpu) / done
                stats = await probe.info("commandstats")
                calls = int(stats.get("cmdstat_hgetall", {}).get("calls", 0)) - calls
                label = f"{name}, {width} at once"
                print(f"{label:44} {wall * 1e6:>11.1f}us {cpu * 1e6:>10.1f}us {calls:>9}")
    finally:
        await probe.aclose()
        await store.close()


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    with store_url(args.redis_url) as url:
        asyncio.run(run(url, args.requests))


if __name__ == "__main__":
    main()
