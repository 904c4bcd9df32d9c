"""A burst of simulated users over HTTP: submit all at once, follow every task to its end, summarise.

The simulated users (here, in `genqueue loadtest` and in the demo) talk to genqueue through
`genqueue_client`, over aiohttp's connection pool (`pooled`).
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from genqueue_client import AsyncClient, GenqueueError
from httpx_aiohttp import AiohttpTransport

from actors.forecast import makespan_at_rate, throughput_bound
from actors.providers.images import sample_garment, sample_selfie
from events.catalogue import TERMINAL


def pooled(limit: int = 0) -> httpx.AsyncBaseTransport:
    """The transport of a client that holds hundreds of connections (`limit`, 0: no limit):
    aiohttp's pool under httpx. httpx's own pool scans every connection per request, which
    makes the client, not genqueue, the bottleneck at hundreds of simulated users."""
    return AiohttpTransport(client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)))


def user_kind(i: int, kind: str) -> str:
    """The kind simulated user `i` asks for: `mixed` alternates photography and fitting."""
    if kind == "mixed":
        return "photography" if i % 2 == 0 else "fitting"
    return kind


def images(i: int, kind: str) -> dict[str, bytes]:
    """Simulated user `i`'s photos for a task of `kind`: a selfie, and a garment for a fitting."""
    photos = {"person": sample_selfie(i)}
    if kind == "fitting":
        photos["garment"] = sample_garment(i)
    return photos


def prompt(i: int) -> str:
    """What simulated user `i` asks for."""
    return f"studio portrait, look {i % 7}"


def user_id(i: int) -> str:
    """Simulated user `i`'s id: a service token submits on its behalf."""
    return f"user-{i}"


def payload(i: int, kind: str) -> dict[str, Any]:
    """A submit body for simulated user `i`, with generated photos."""
    return {
        "kind": kind,
        "prompt": prompt(i),
        "images": {role: base64.b64encode(data).decode() for role, data in images(i, kind).items()},
        "user_id": user_id(i),
    }


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
    pressed: dict[str, float] = field(default_factory=dict)  # by task: when its user pressed (epoch s)
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
    token: str | None = None,
    task_deadline: Callable[[int], float | None] | None = None,
    task_lane: Callable[[int], str | None] | None = None,
    press_at: Callable[[int], float] | None = None,
) -> BurstResult:
    """Submit `users` tasks at once and wait until all have ended (or `deadline_seconds` pass).

    `token` goes with every request: an admin's, as the burst reads `/v1/queue` and submits on
    behalf of its simulated users. Retries are off: every refusal is counted. `task_deadline`
    gives user i's task its deadline (seconds, None: none); such a task is queued even when its
    ETA already misses it (`if_late` accept), so that a burst shows what expires; `task_lane`
    gives its priority lane (None: the token's). `press_at` gives the second, after the clock
    starts, at which user i presses (None: all at once)."""
    # Made before the clock starts: each simulated user has its photos ready when it presses.
    photos = await asyncio.to_thread(lambda: [images(i, user_kind(i, kind)) for i in range(users)])
    client = AsyncClient(url, token, timeout=60.0, retries=0, transport=pooled(users))
    async with client:
        before = await client.queue()
        # Each simulated user is connected before it presses, as an app on a phone is: the
        # clock then times genqueue, not one client process opening hundreds of connections.
        await asyncio.gather(*(client.request("GET", "/healthz") for _ in range(users)))
        result = BurstResult(started=time.time())

        clock = time.perf_counter()

        async def submit(i: int) -> str | None:
            if press_at is not None:
                await asyncio.sleep(max(0.0, clock + press_at(i) - time.perf_counter()))
            t0, pressed = time.perf_counter(), time.time()
            try:
                seconds = task_deadline(i) if task_deadline is not None else None
                task = await client.submit(
                    user_kind(i, kind),
                    photos[i],
                    prompt(i),
                    user_id=user_id(i),
                    deadline_seconds=seconds,
                    if_late="accept" if seconds else None,
                    lane=task_lane(i) if task_lane is not None else None,
                )
            except GenqueueError as exc:
                result.submit_latencies.append(time.perf_counter() - t0)
                result.rejected[exc.status] = result.rejected.get(exc.status, 0) + 1
                return None
            result.submit_latencies.append(time.perf_counter() - t0)
            eta = task.submitted.eta_seconds if task.submitted else None
            result.predicted[task.id] = float(eta or 0.0)
            result.pressed[task.id] = pressed
            return task.id

        async def watch(task_id: str) -> None:
            """Follow one task's SSE stream; time each state change from its event to its message."""
            seen = -1
            async for update in client.watch(task_id):
                arrived = time.time()
                result.sse_messages[task_id] = result.sse_messages.get(task_id, 0) + 1
                count = int(update.id.split("-")[0] or 0)
                view = update.view
                if count != seen and seen >= 0:
                    stamps = [t for t in (view.dispatched_at, view.started_at, view.finished_at) if t]
                    if stamps:
                        result.sse_delays.append(arrived - max(stamps))
                seen = count

        # One simulated user after another, each request on the wire before the next is built:
        # with all 600 started at once, aiohttp writes a request body in a task of its own,
        # queued behind the other users' starts, and the first request would leave last.
        pending = []
        for i in range(users):
            pending.append(asyncio.create_task(submit(i)))
            await asyncio.sleep(0)
        ids = [t for t in await asyncio.gather(*pending) if t]
        result.submits_answered = time.time()
        watchers = [asyncio.create_task(watch(t)) for t in ids[-watch_last:]] if watch_last else []
        deadline = time.monotonic() + deadline_seconds
        # Each ending's count (one an older server does not report counts 0).
        base_done = sum(before.get(k, 0) for k in TERMINAL)
        while time.monotonic() < deadline:
            q = await client.queue()
            if on_progress is not None:
                on_progress(q)
            if sum(q.get(k, 0) for k in TERMINAL) - base_done >= len(ids):
                break
            await asyncio.sleep(poll)
        if watchers:
            await asyncio.wait(watchers, timeout=30)
        sem = asyncio.Semaphore(32)

        async def fetch(task_id: str) -> None:
            async with sem:
                result.views[task_id] = (await client.task(task_id).status()).raw

        await asyncio.gather(*(fetch(t) for t in ids))
    result.finished = time.time()
    return result


def bound_seconds(users: int, slots: int, latency: float, rpm_total: float) -> float:
    """The lower bound on makespan: N / min(slots / latency, ΣRPM / 60) + latency (slots do not
    bind calls that take no time)."""
    return makespan_at_rate(users, throughput_bound(slots, latency, rpm_total), latency)
