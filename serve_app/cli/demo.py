"""The demo's live display and closing summary."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from genqueue_client import AsyncClient
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from actors.config import Config
from events.catalogue import TERMINAL
from events.redis_store import RedisEventStore
from serve_app.cli.burst import bound_seconds, percentile, run_burst
from serve_app.http.auth import new_token


def _pools_table(q: dict[str, Any]) -> Table:
    table = Table(title="quota pools", expand=False)
    for col in ("pool", "state", "limit", "calls left in window", "calls made", "429s"):
        table.add_column(col)
    for p in q.get("pools", []):
        limit = f"{p['capacity']} per {p['window_seconds']:g} s"
        table.add_row(
            p["name"],
            p.get("state", "ok"),
            limit,
            f"{p['window_left']}/{p['capacity']}",
            str(p["calls"]),
            str(p.get("throttled", 0)),
        )
    return table


def extension(image: bytes) -> str:
    """The file extension of a PNG, JPEG or WebP image, from its first bytes ("bin" otherwise)."""
    if image.startswith(b"\x89PNG"):
        return "png"
    if image.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "webp"
    return "bin"


async def save_images(url: str, views: dict[str, dict[str, Any]], out: Path, token: str) -> None:
    """Download every succeeded task's image into `out`, named by user and kind."""
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    async with AsyncClient(url, token, timeout=60) as client:
        for task_id, view in views.items():
            if view.get("status") != "succeeded":
                continue
            image = await client.task(task_id).result()
            target = out / f"{view['user_id']}-{view['kind']}.{extension(image)}"
            await asyncio.to_thread(target.write_bytes, image)


async def demo_token(config: Config) -> str:
    """A new admin token for the demo: it submits for its users and reads the queue."""
    secret, event = new_token("demo", "admin")
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    try:
        await store.append([event])
    finally:
        await store.close()
    return secret


async def run_demo(url: str, config: Config, users: int, out: Path, console: Console) -> bool:
    """Burst `users` tasks, show progress live, save the images; True if every task succeeded."""
    token = await demo_token(config)
    progress = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        TextColumn("{task.completed:>4}/{task.total}"),
    )
    bars = {name: progress.add_task(name, total=users) for name in ("waiting", "running", "done")}
    latest: dict[str, Any] = {}

    def show(q: dict[str, Any]) -> None:
        latest.update(q)
        progress.update(bars["waiting"], completed=q["waiting"])
        progress.update(bars["running"], completed=q["running"])
        progress.update(bars["done"], completed=sum(q.get(k, 0) for k in TERMINAL))
        live.update(Group(progress, _pools_table(q)))

    with Live(progress, console=console, refresh_per_second=8) as live:
        result = await run_burst(url, users, "mixed", on_progress=show, poll=0.25, token=token)
    await save_images(url, result.views, out, token)
    waits = result.waits()
    rpm_total = sum(p.rpm for p in config.pools)
    latency = latest.get("mean_latency_seconds") or config.provider.latency_seconds
    bound = bound_seconds(users, config.queue.slots, latency, rpm_total)
    succeeded = result.count("succeeded")
    summary = Table(title="demo summary", show_header=False)
    summary.add_row("tasks succeeded", f"{succeeded}/{users}")
    summary.add_row("rejected at submit", str(sum(result.rejected.values())))
    summary.add_row("makespan", f"{result.makespan:.1f} s")
    summary.add_row(
        "throughput bound",
        f"{bound:.1f} s  (N / min(slots/latency, ΣRPM/60) + latency: the steady rate; a burst that "
        "fits the pools' first window beats it)",
    )
    summary.add_row("started at once", str(sum(1 for w in waits if w < 1.5 * latency)))
    summary.add_row(
        "wait to start p50 / p99", f"{percentile(waits, 50):.1f} s / {percentile(waits, 99):.1f} s"
    )
    summary.add_row(
        "submit latency p50 / p99",
        f"{1000 * percentile(result.submit_latencies, 50):.0f} ms / "
        f"{1000 * percentile(result.submit_latencies, 99):.0f} ms",
    )
    summary.add_row("images written to", str(out))
    console.print(summary)
    return succeeded == users
