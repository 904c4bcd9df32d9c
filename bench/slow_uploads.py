"""Submit latency while slow uploads are open: valid submits timed with no other traffic, then
with uploads open that send their headers and stall (half with no token, half with a valid
service token), side by side on one instance under Ray Serve.

    python bench/slow_uploads.py [--slow 100] [--submits 200] [--json]

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from actors.config import AuthConfig, CreditsConfig, ProviderConfig
from bench.common import bench_config, bench_pools, own_serve_ports, print_figures
from serve_app.cli.burst import payload, percentile
from serve_app.http.auth import new_token
from tests.helpers import append_to


async def stall(host: str, port: int, token: str | None) -> asyncio.StreamWriter:
    """A submit whose headers promise 100 kB of body, of which one byte is sent."""
    _, writer = await asyncio.open_connection(host, port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        "POST /v1/tasks HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: 100000\r\n{auth}\r\n{{"
    )
    writer.write(head.encode())
    await writer.drain()
    return writer


async def timed_submits(url: str, token: str, count: int, offset: int) -> list[float]:
    """Seconds each of `count` valid submits took, one after another."""
    seconds = []
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as c:
        for i in range(count):
            body = payload(offset + i, "photography")
            started = time.perf_counter()
            answer = await c.post("/v1/tasks", json=body)
            seconds.append(time.perf_counter() - started)
            if answer.status_code != 202:
                raise SystemExit(f"a valid submit answered {answer.status_code}: {answer.text[:200]}")
    return seconds


async def measure(url: str, token: str, slow: int, submits: int) -> dict[str, Any]:
    """Submit latency with no slow uploads, then with `slow` of them open."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    await timed_submits(url, token, 20, 10_000)  # warm the replica's paths
    quiet = await timed_submits(url, token, submits, 0)
    writers = [await stall(host, int(port), token if i % 2 else None) for i in range(slow)]
    opened = time.perf_counter()
    loaded = await timed_submits(url, token, submits, submits)
    held = time.perf_counter() - opened
    for writer in writers:
        writer.close()
    return {
        "slow_uploads": slow,
        "submits": submits,
        "quiet_p50_ms": round(statistics.median(quiet) * 1000, 1),
        "quiet_p99_ms": round(percentile(quiet, 99) * 1000, 1),
        "with_slow_p50_ms": round(statistics.median(loaded) * 1000, 1),
        "with_slow_p99_ms": round(percentile(loaded, 99) * 1000, 1),
        "with_slow_max_ms": round(max(loaded) * 1000, 1),
        "p99_ratio": round(percentile(loaded, 99) / percentile(quiet, 99), 2),
        "seconds_uploads_held_open": round(held, 2),
    }


def main() -> None:
    """Start genqueue with tokens and credits on, measure, stop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=100, help="slow uploads held open")
    parser.add_argument("--submits", type=int, default=200, help="valid submits timed in each phase")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from serve_app.runtime import running

    own_serve_ports()
    base = bench_config(bench_pools(1, 600, 60.0), 4, ProviderConfig(name="offline", latency_seconds=1.0))
    config = replace(
        base,
        auth=AuthConfig(required=True),
        credits=replace(CreditsConfig(), default_grant=1_000_000),
        queue=replace(base.queue, per_user_waiting=1_000_000, max_waiting=1_000_000),
    )
    with running(config, dashboard=False) as live:
        token, event = new_token("bench", "service")
        append_to(live.config, [event])
        figures = asyncio.run(measure(live.api_url, token, args.slow, args.submits))
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
