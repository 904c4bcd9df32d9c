"""The operator routes: the queue overview, Prometheus metrics, liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from serve_app.http.deps import AdminDep, Ctx, ScraperDep
from serve_app.http.estimates import throughput
from serve_app.http.metrics import read_figures, render
from serve_app.http.pools import read_pools
from serve_app.http.problems import problem

router = APIRouter()


@router.get("/v1/queue", tags=["queue"])
async def queue(c: Ctx, _admin: AdminDep) -> dict[str, Any]:
    """Waiting, running, slots, throughput and each pool's window budget."""
    counts = await c.store.counts()
    views = await read_pools(c.store, c.config)
    rate, latency = throughput(c.config, counts.stats, views)
    stats = counts.stats
    return {
        "waiting": counts.waiting,
        "running": counts.running,
        "slots": c.config.queue.slots,
        "submitted": int(stats.get("submitted", 0)),
        "succeeded": int(stats.get("succeeded", 0)),
        "failed": int(stats.get("failed", 0)),
        "cancelled": int(stats.get("cancelled", 0)),
        "mean_latency_seconds": round(latency, 3),
        "throughput_bound_per_second": round(rate, 3),
        "throttled": int(stats.get("throttled", 0)),
        "pools": [{**view.as_json(), "calls": int(stats.get(f"calls:{view.name}", 0))} for view in views],
        "alerts": await c.store.alerts(),
        "recent_failures": await c.store.recent_failures(),
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
    """Readiness: the event store answers and the actors are alive."""
    store_ok = await c.store.ping()
    actors_ok = await c.readiness() if (c.readiness is not None and store_ok) else store_ok
    ok = store_ok and actors_ok
    body = {"status": "ready" if ok else "not ready", "store": store_ok, "actors": actors_ok}
    if ok:
        return JSONResponse(body)
    return problem(
        503,
        "Not ready",
        f"store reachable: {store_ok}; actors alive: {actors_ok}",
        "/readyz",
        {"Retry-After": "2"},
    )
