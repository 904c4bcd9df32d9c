"""What the benchmark scripts share: a genqueue config for a run, the emulator as a process, ports."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from actors.config import Config, CreditsConfig, KeyPoolConfig, PoolConfig, ProviderConfig, Secret
from serve_app.ports import free_port
from tests.helpers import make_config

# The load clients' niceness in benchmarks: Ray runs its workers at 15, and on a small machine
# a client at 0 takes the CPU from the system it measures.
CLIENT_NICE = 15


def add_client_nice(p: argparse.ArgumentParser, clients: str = "the load clients") -> None:
    """The `--client-nice` option: the niceness `clients` take once genqueue is up."""
    p.add_argument(
        "--client-nice",
        type=int,
        default=CLIENT_NICE,
        help=f"niceness of {clients} once genqueue is up: Ray runs its workers at {CLIENT_NICE}, and on "
        "a small machine a client at 0 takes the CPU from the system it measures (0: leave it)",
    )


def add_render(p: argparse.ArgumentParser) -> None:
    """The `--render` option: the offline provider draws each image with Pillow (default: its
    stock PNG, as upstream draws on its own machines, not on the cores being measured)."""
    p.add_argument(
        "--render",
        action="store_true",
        help="offline provider: render each image with Pillow (default: a stock PNG, so that the "
        "figures are genqueue's and not Pillow's on the same cores)",
    )


def lower_priority(nice: int) -> None:
    """This process (and what it starts from now on) `nice` steps lower, if any."""
    if nice:
        os.nice(nice)


def own_serve_ports() -> None:
    """Give this run's HAProxy (Serve's direct ingress) its own metrics and stats ports.

    Its defaults (9101, 8404) are fixed, so a second genqueue on the machine, a test run
    for instance, would fail to start while a benchmark runs.
    """
    for name in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT"):
        os.environ.setdefault(name, str(free_port()))


def bench_pools(count: int, rpm: int, window: float, keys: int = 1) -> tuple[PoolConfig, ...]:
    """`count` pools at `rpm` over a `window`-second window, each with `keys` keys."""
    return tuple(
        PoolConfig(
            name=f"pool-{i + 1}",
            rpm=rpm,
            keys=tuple(Secret(f"bench-key-{i + 1}-{j + 1:012d}") for j in range(keys)),
            window_seconds=window,
        )
        for i in range(count)
    )


def bench_config(
    pools: tuple[PoolConfig, ...],
    slots: int,
    provider: ProviderConfig,
    keypool: KeyPoolConfig | None = None,
    replicas: int = 1,
    workers: int = 2,
    credits: CreditsConfig | None = None,
) -> Config:
    """A whole instance for one run: embedded Valkey, a fresh namespace and data directory, a
    free port; tokens, credits (unless given) and per-user caps off (the benchmarks measure the
    scheduler)."""
    config = make_config(
        "",
        tempfile.mkdtemp(prefix="genqueue-bench-"),
        slots=slots,
        lease_seconds=120,
        max_attempts=3,
        workers=workers,
        port=free_port(),
        provider=provider,
        pool_configs=pools,
        keypool=keypool,
        credits=credits,
    )
    return replace(config, server=replace(config.server, replicas=replicas))


# The emulator's scheduling priority in benchmarks (a nice value; applied where permitted).
EMULATOR_NICE = -10


def _upstream_priority(nice: int) -> None:
    """In the emulator's process before it starts: run ahead of the system under test.

    The emulator stands for an upstream on machines of its own. On a small machine that it
    shares with genqueue, the scheduler can hold its loop back by tens of milliseconds
    while a burst takes the CPU; an arrival stamped that late makes the call before look
    later than it was, and the next call on its place gets a 429 that upstream would not
    give. Without the permission to raise a priority the emulator runs as it is.
    """
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)


@contextlib.contextmanager
def emulator_process(
    pools: Sequence[PoolConfig],
    window: float,
    latency: float,
    jitter: float,
    real_rpm: int = 0,
    day_quota: int = 0,
    nice: int = EMULATOR_NICE,
) -> Iterator[str]:
    """`genqueue emulator` in its own process, one project per pool at `real_rpm` (default: the
    pool's RPM); `day_quota` requests a day for the first project; at niceness `nice` (0: as
    it is). Yields its base URL."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "genqueue"), "emulator", "--port", str(port)]
    for i, pool in enumerate(pools):
        rpd = f":{day_quota}" if day_quota and i == 0 else ""
        keys = ",".join(k.reveal() for k in pool.keys)
        command += ["--pool", f"{pool.name}:{real_rpm or pool.rpm}:{keys}{rpd}"]
    command += ["--window-seconds", str(window), "--latency", str(latency)]
    command += ["--jitter", str(jitter), "--seed", "1"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=functools.partial(_upstream_priority, nice) if nice else None,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the emulator did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def print_figures(figures: dict[str, Any], as_json: bool) -> None:
    """A script's figures: one JSON line (for `bench/suite.py`), or one figure a line."""
    if as_json:
        print(json.dumps(figures))
        return
    width = max(map(len, figures), default=0)
    for key, value in figures.items():
        print(f"{key:>{width}}  {value}")


def upstream_counts(url: str) -> dict[str, object]:
    """What the emulator counted: calls, 429s and the most calls any project saw in a window."""
    stats = httpx.get(f"{url}/stats", timeout=5).json()
    projects = stats["projects"]
    accepted = sum(p["accepted"] for p in projects.values())
    throttled = sum(p["throttled"] for p in projects.values())
    calls = accepted + throttled
    return {
        "upstream_calls": calls,
        "upstream_429s": throttled,
        "upstream_429_share": round(throttled / calls, 4) if calls else 0.0,
        "upstream_max_window_calls": {n: p["max_window_calls"] for n, p in projects.items()},
        "upstream_capacity": {n: p["capacity"] for n, p in projects.items()},
    }


def make_tokens(
    url: str, namespace: str, users: Sequence[str], role: str = "user", credits: int = 0
) -> list[str]:
    """A new token for each of `users` (with `role`), and `credits` granted to each user, written
    as events to the store as `genqueue token create` and `genqueue credits grant` do; returns
    the tokens, in the order of `users`."""
    import asyncio

    from events.catalogue import CreditsGranted, Event
    from events.redis_store import RedisEventStore
    from serve_app.http.auth import new_token

    tokens: list[str] = []
    events: list[Event] = []
    for user in users:
        token, created = new_token(user, role)
        tokens.append(token)
        events.append(created)
        if credits:
            events.append(
                CreditsGranted(user_id=user, amount=credits, reason="bench", by="bench", at=time.time())
            )

    async def write() -> None:
        store = RedisEventStore.from_url(url, namespace)
        try:
            for start in range(0, len(events), 500):
                await store.append(events[start : start + 500])
        finally:
            await store.close()

    asyncio.run(write())
    return tokens
