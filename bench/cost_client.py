"""The load clients of bench/cost.py, each run as a process of its own so that the bench process
(a Ray driver) does not share its loop with them. Each prints one JSON line.

    closed  CLIENTS keep-alive connections posting for SECONDS (when wrk is not installed)
    burst   one submit per token, every one at the same instant, connections opened before
    watch   burst, and as each submit is answered, open task streams on it (`--watchers` in
            all, spread over the tasks, each with its task's own token) and read them to the end
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (0-100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_figures(latencies: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max, in milliseconds."""
    return {
        "p50_ms": round(1000 * percentile(latencies, 50), 1),
        "p90_ms": round(1000 * percentile(latencies, 90), 1),
        "p99_ms": round(1000 * percentile(latencies, 99), 1),
        "max_ms": round(1000 * max(latencies, default=0.0), 1),
    }


def headers_for(token: str) -> dict[str, str]:
    """A submit's headers with `token` ("" for none)."""
    out = {"Content-Type": "application/json"}
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


async def closed(
    url: str, path: str, tokens: list[str], body: bytes, clients: int, seconds: float
) -> dict[str, Any]:
    """`clients` connections posting in a loop for `seconds`."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    errors = 0
    turn = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:
        await asyncio.gather(*(s.get("/healthz") for _ in range(clients)), return_exceptions=True)
        start = time.perf_counter()
        stop = start + seconds

        async def one() -> None:
            nonlocal errors, turn
            while time.perf_counter() < stop:
                turn += 1
                t0 = time.perf_counter()
                try:
                    async with s.post(path, data=body, headers=headers_for(tokens[turn % len(tokens)])) as r:
                        await r.read()
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[r.status] += 1

        await asyncio.gather(*(one() for _ in range(clients)))
        took = time.perf_counter() - start
    return {"seconds": took, "statuses": dict(statuses), "errors": errors, **latency_figures(latencies)}


async def burst(
    url: str, path: str, tokens: list[str], body: bytes, watchers: int = 0, deadline: float = 120.0
) -> dict[str, Any]:
    """One submit per token at the same instant; with `watchers`, streams on the tasks."""
    statuses: Counter[int] = Counter()
    watch_statuses: Counter[int] = Counter()
    latencies: list[float] = []
    messages = 0
    ended = 0
    users = len(tokens)
    connector = aiohttp.TCPConnector(limit=users + watchers + 16)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as s:
        # Each user is connected before it presses, as an app on a phone is.
        await asyncio.gather(*(s.get("/healthz") for _ in range(users)), return_exceptions=True)
        streams: list[asyncio.Task[None]] = []

        async def watch(task_id: str, token: str) -> None:
            nonlocal messages, ended
            try:
                async with s.get(f"/v1/tasks/{task_id}/watch", headers=headers_for(token)) as r:
                    watch_statuses[r.status] += 1
                    async for line in r.content:
                        if line.startswith(b"data:"):
                            messages += 1
                    ended += r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                watch_statuses[0] += 1

        async def submit(i: int, token: str) -> None:
            t0 = time.perf_counter()
            try:
                async with s.post(path, data=body, headers=headers_for(token)) as r:
                    answer = await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                statuses[0] += 1
                return
            latencies.append(time.perf_counter() - t0)
            statuses[r.status] += 1
            if r.status == 202 and watchers:
                count = watchers // users + (1 if i < watchers % users else 0)
                streams.extend(asyncio.create_task(watch(answer["task_id"], token)) for _ in range(count))

        started = time.time()
        pending = []
        for i, token in enumerate(tokens):
            pending.append(asyncio.create_task(submit(i, token)))
            await asyncio.sleep(0)  # each request on the wire before the next is built
        await asyncio.gather(*pending)
        answered = time.time()
        if streams:
            await asyncio.wait(streams, timeout=deadline)
        last = time.time()
    return {
        "started": started,
        "submit_span_s": round(answered - started, 3),
        "statuses": dict(statuses),
        **latency_figures(latencies),
        "watchers_opened": watch_statuses.get(200, 0),
        "watch_statuses": dict(watch_statuses),
        "watchers_to_the_end": ended,
        "sse_messages": messages,
        "watch_span_s": round(last - started, 3),
    }


def main() -> None:
    """Parse arguments, run one client, print its JSON line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["closed", "burst", "watch"])
    p.add_argument("--url", required=True)
    p.add_argument("--path", default="/v1/tasks")
    p.add_argument("--tokens", type=Path, required=True, help="one token a line")
    p.add_argument("--body", type=Path, required=True)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--watchers", type=int, default=0)
    p.add_argument("--deadline", type=float, default=120.0)
    args = p.parse_args()
    tokens = args.tokens.read_text().splitlines() or [""]
    body = args.body.read_bytes()
    if args.mode == "closed":
        out = asyncio.run(closed(args.url, args.path, tokens, body, args.clients, args.seconds))
    else:
        watchers = args.watchers if args.mode == "watch" else 0
        out = asyncio.run(burst(args.url, args.path, tokens, body, watchers, args.deadline))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
