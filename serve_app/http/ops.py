"""The operator routes: the queue overview, Prometheus metrics, liveness and readiness."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from events.public_view import Blocked, iso
from serve_app.http.context import Context
from serve_app.http.deps import AdminDep, Ctx, ScraperDep
from serve_app.http.estimates import throughput
from serve_app.http.metrics import read_figures, render
from serve_app.http.ops_figures import intake_json, ops_figures
from serve_app.http.pools import read_pools
from serve_app.http.problems import problem
from serve_app.http.serving import serving, serving_now

router = APIRouter()


def blocked_json(blocked: Blocked) -> dict[str, Any]:
    """A blocked kind as the ops answers show it: why, and until when (null: unknown)."""
    return {"reason": blocked.reason, "until": blocked.until, "until_iso": iso(blocked.until)}


@router.get("/v1/queue", tags=["queue"])
async def queue(c: Ctx, _admin: AdminDep) -> dict[str, Any]:
    """Waiting, starting (holding a slot, no call in flight yet: waiting for quota or about to
    call), running (upstream calls in flight), slots, the kinds no pool can serve (`blocked`),
    throughput and each pool's window budget; with `[[lanes]]`, each lane's waiting tasks and
    its weight and reserved share."""
    counts = await c.store.counts()
    held, calls = await c.store.in_flight()
    views = await read_pools(c.store, c.config)
    rate, latency = throughput(c.config, counts.stats, views)
    stats = counts.stats
    now = serving(views, time.time())
    return {
        "waiting": counts.waiting,
        "starting": max(0, held - calls),
        "running": calls,
        "slots": c.config.queue.slots,
        "blocked": {kind: blocked_json(b) for kind, b in now.blocked.items()},
        "quota_until": now.quota_until,
        "submitted": int(stats.get("submitted", 0)),
        "succeeded": int(stats.get("succeeded", 0)),
        "failed": int(stats.get("failed", 0)),
        "cancelled": int(stats.get("cancelled", 0)),
        "expired": int(stats.get("expired", 0)),
        "mean_latency_seconds": round(latency, 3),
        "throughput_bound_per_second": round(rate, 3),
        "throttled": int(stats.get("throttled", 0)),
        "pools": [{**view.as_json(), "calls": int(stats.get(f"calls:{view.name}", 0))} for view in views],
        "alerts": await c.store.alerts(),
        "recent_failures": await c.store.recent_failures(),
        **await ops_figures(c.store),
        **({"lanes": await lanes_json(c)} if c.lanes is not None else {}),
    }


async def lanes_json(c: Context) -> dict[str, dict[str, Any]]:
    """Each configured lane's waiting tasks, weight and reserved share."""
    assert c.lanes is not None
    waiting = await c.store.waiting_by_lane(c.lanes)
    return {
        lane.name: {"waiting": waiting.get(lane.name, 0), "weight": lane.weight, "reserved": lane.reserved}
        for lane in c.config.lanes
    }


@router.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
async def metrics(c: Ctx, _scraper: ScraperDep) -> PlainTextResponse:
    """Prometheus text: queue, task totals, upstream calls, wait and processing histograms, pools
    (a metrics or admin token)."""
    figures = await read_figures(c.store, c.config)
    return PlainTextResponse(render(figures, c.config), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(c: Ctx) -> JSONResponse:
    """Readiness: the event store answers and the actors are alive.

    200 `ready`; 200 `degraded` with the reason while no quota pool can serve a kind (every key
    rejected, every pool parked for the day): the replica still answers reads, watches and
    cancels, and refuses those submits itself with a 503 and Retry-After, so it stays in a
    load balancer; 503 `not ready` when the store or the actors do not answer.
    """
    store_ok = await c.store.ping()
    actors_ok = await c.readiness() if (c.readiness is not None and store_ok) else store_ok
    ok = store_ok and actors_ok
    body: dict[str, Any] = {"status": "ready" if ok else "not ready", "store": store_ok, "actors": actors_ok}
    if ok:
        # A paused intake refuses submits with a 503 of its own; the replica stays ready.
        body["intake"] = intake_json(await c.store.intake())
        blocked = (await serving_now(c)).blocked
        if blocked:
            reasons = sorted({b.reason for b in blocked.values()})
            body.update(
                status="degraded",
                reason="; ".join(reasons),
                blocked={kind: blocked_json(b) for kind, b in blocked.items()},
            )
        return JSONResponse(body)
    return problem(
        503,
        "Not ready",
        f"store reachable: {store_ok}; actors alive: {actors_ok}",
        "/readyz",
        {"Retry-After": "2"},
    )
