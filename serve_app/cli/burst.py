"""A burst of simulated users over HTTP: submit all at once, follow every task to its end, summarise."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from actors.forecast import makespan_at_rate, throughput_bound
from actors.providers.images import sample_garment, sample_selfie

TERMINAL = ("succeeded", "failed", "cancelled")
JSON = {"Content-Type": "application/json"}


def user_kind(i: int, kind: str) -> str:
    """The kind simulated user `i` asks for: `mixed` alternates photography and fitting."""
    if kind == "mixed":
        return "photography" if i % 2 == 0 else "fitting"
    return kind


def payload(i: int, kind: str) -> dict[str, Any]:
    """A submit body for simulated user `i`, with generated photos."""
    images = {"person": base64.b64encode(sample_selfie(i)).decode()}
    if kind == "fitting":
        images["garment"] = base64.b64encode(sample_garment(i)).decode()
    return {
        "kind": kind,
        "prompt": f"studio portrait, look {i % 7}",
        "images": images,
        "user_id": f"user-{i}",
    }


async def sse_messages(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, str]]:
    """The messages of a `text/event-stream` body, each as its fields (`id`, `event`, `data`)."""
    message: dict[str, str] = {}
    async for raw in content:
        line = raw.decode().rstrip("\r\n")
        if line:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            # Several data lines make one value, joined by newlines.
            message[name] = f"{message[name]}\n{value}" if name == "data" and name in message else value
            continue
        if "data" in message:
            yield message
        message = {}


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (0-100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(slots=True)
class BurstResult:
    """What one burst measured."""

    started: float
    submit_latencies: list[float] = field(default_factory=list)
    rejected: dict[int, int] = field(default_factory=dict)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    predicted: dict[str, float] = field(default_factory=dict)
    sse_messages: dict[str, int] = field(default_factory=dict)
    sse_delays: list[float] = field(default_factory=list)
    submits_answered: float = 0.0  # when the last submit was answered
    finished: float = 0.0

    @property
    def makespan(self) -> float:
        """From the first submit to the last task's end."""
        ends = [v["finished_at"] for v in self.views.values() if v.get("finished_at")]
        return (max(ends) - self.started) if ends else 0.0

    def waits(self) -> list[float]:
        """Seconds from submit to start (token held) for every started task."""
        return [v["started_at"] - v["submitted_at"] for v in self.views.values() if v.get("started_at")]

    def eta_errors(self, min_wait: float = 0.5) -> list[float]:
        """|predicted start - actual start| / actual wait, for tasks that waited at least `min_wait`."""
        errors = []
        for task_id, view in self.views.items():
            if task_id in self.predicted and view.get("started_at"):
                wait = view["started_at"] - view["submitted_at"]
                if wait >= min_wait:
                    errors.append(abs(self.predicted[task_id] - wait) / wait)
        return errors

    def count(self, status: str) -> int:
        """How many tasks ended with `status`."""
        return sum(1 for v in self.views.values() if v.get("status") == status)


async def run_burst(
    url: str,
    users: int,
    kind: str = "mixed",
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    deadline_seconds: float = 900.0,
    poll: float = 0.5,
    watch_last: int = 0,
    headers: dict[str, str] | None = None,
) -> BurstResult:
    """Submit `users` tasks at once and wait until all have ended (or `deadline_seconds` pass).

    `headers` go with every request (an `Authorization` of an admin token: the burst reads
    `/v1/queue` and submits on behalf of its simulated users)."""
    # Encoded before the clock starts: each simulated user has its request ready when it presses.
    bodies = await asyncio.to_thread(
        lambda: [json.dumps(payload(i, user_kind(i, kind))).encode() for i in range(users)]
    )
    # aiohttp rather than httpx: httpx's pool scans every connection per request, which
    # made the client, not the server, the bottleneck at hundreds of connections.
    connector = aiohttp.TCPConnector(limit=users)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout, headers=headers) as client:

        async def get(path: str) -> dict[str, Any]:
            async with client.get(path) as r:
                body: dict[str, Any] = await r.json(content_type=None)
                return body

        before = await get("/v1/queue")
        # Each simulated user is connected before it presses, as an app on a phone is: the
        # clock then times genqueue, not one client process opening hundreds of connections.
        await asyncio.gather(*(get("/healthz") for _ in range(users)))
        result = BurstResult(started=time.time())

        async def submit(body: bytes) -> str | None:
            t0 = time.perf_counter()
            async with client.post("/v1/tasks", data=body, headers=JSON) as r:
                answer = await r.json(content_type=None)
            result.submit_latencies.append(time.perf_counter() - t0)
            if r.status != 202:
                result.rejected[r.status] = result.rejected.get(r.status, 0) + 1
                return None
            result.predicted[answer["task_id"]] = float(answer["eta_seconds"] or 0.0)
            return str(answer["task_id"])

        async def watch(task_id: str) -> None:
            """Follow one task's SSE stream; time each state change from its event to its message."""
            seen = -1
            async with client.get(f"/v1/tasks/{task_id}/watch") as r:
                async for message in sse_messages(r.content):
                    arrived = time.time()
                    result.sse_messages[task_id] = result.sse_messages.get(task_id, 0) + 1
                    count = int(message.get("id", "0-").split("-")[0] or 0)
                    data = json.loads(message["data"])
                    if count != seen and seen >= 0:
                        stamps = [
                            data[k] for k in ("dispatched_at", "started_at", "finished_at") if data.get(k)
                        ]
                        if stamps:
                            result.sse_delays.append(arrived - max(stamps))
                    seen = count

        # One simulated user after another, each request on the wire before the next is built:
        # with all 600 started at once, aiohttp writes a request body in a task of its own,
        # queued behind the other users' starts, and the first request would leave last.
        pending = []
        for body in bodies:
            pending.append(asyncio.create_task(submit(body)))
            await asyncio.sleep(0)
        ids = [t for t in await asyncio.gather(*pending) if t]
        result.submits_answered = time.time()
        watchers = [asyncio.create_task(watch(t)) for t in ids[-watch_last:]] if watch_last else []
        deadline = time.monotonic() + deadline_seconds
        base_done = sum(before[k] for k in TERMINAL)
        while time.monotonic() < deadline:
            q = await get("/v1/queue")
            if on_progress is not None:
                on_progress(q)
            if sum(q[k] for k in TERMINAL) - base_done >= len(ids):
                break
            await asyncio.sleep(poll)
        if watchers:
            await asyncio.wait(watchers, timeout=30)
        sem = asyncio.Semaphore(32)

        async def fetch(task_id: str) -> None:
            async with sem:
                result.views[task_id] = await get(f"/v1/tasks/{task_id}")

        await asyncio.gather(*(fetch(t) for t in ids))
    result.finished = time.time()
    return result


def bound_seconds(users: int, slots: int, latency: float, rpm_total: float) -> float:
    """The lower bound on makespan: N / min(slots / latency, ΣRPM / 60) + latency (slots do not
    bind calls that take no time)."""
    return makespan_at_rate(users, throughput_bound(slots, latency, rpm_total), latency)
