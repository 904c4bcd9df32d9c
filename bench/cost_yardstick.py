"""The yardstick of bench/cost.py: a trivial FastAPI endpoint that appends one stream entry.

`POST /v1/tasks` reads the body, does one XADD to the same Valkey genqueue uses and answers
202: what any HTTP front door on this stack costs before genqueue adds its own work. It runs
on bare uvicorn (`python -m uvicorn bench.cost_yardstick:app`, the store's URL in
BENCH_YARDSTICK_REDIS_URL) and as a second application on genqueue's own Serve instance
(`deploy`), behind the same direct ingress and HAProxy.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response

URL_VARIABLE = "BENCH_YARDSTICK_REDIS_URL"
STREAM = "yardstick:events"
SERVE_APP = "yardstick"
SERVE_PREFIX = "/yardstick"


def create_app(redis_url: str) -> FastAPI:
    """The trivial app on a bounded connection pool to `redis_url` (made on first use, inside
    the serving loop)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    clients: list[aioredis.Redis] = []

    def client() -> aioredis.Redis:
        if not clients:
            pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=10)
            clients.append(aioredis.Redis(connection_pool=pool))
        return clients[0]

    @app.post("/v1/tasks", status_code=202)
    async def submit(request: Request, response: Response) -> dict[str, Any]:
        body = await request.body()
        task_id = uuid.uuid4().hex
        await client().xadd(STREAM, {"task": task_id, "bytes": len(body), "at": time.time()})
        response.headers["Location"] = f"/v1/tasks/{task_id}"
        return {"task_id": task_id, "status": "queued"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def __getattr__(name: str) -> Any:
    """`app` for uvicorn, built on first access from the URL in the environment."""
    if name == "app":
        return create_app(os.environ[URL_VARIABLE])
    raise AttributeError(name)


def deploy(redis_url: str) -> None:
    """Run the trivial app on the running Serve instance at SERVE_PREFIX, as genqueue's
    ingress is deployed (one replica, same concurrency, no per-request access log), and wait
    until it serves."""
    from ray import serve
    from ray.serve.schema import LoggingConfig

    @serve.deployment(
        name="yardstick",
        num_replicas=1,
        max_ongoing_requests=1000,
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=5,
        ray_actor_options={"num_cpus": 0.1},
        logging_config=LoggingConfig(enable_access_log=False),
    )
    @serve.ingress(create_app(redis_url))
    class Yardstick:
        """Stateless."""

    serve.run(Yardstick.bind(), name=SERVE_APP, route_prefix=SERVE_PREFIX, blocking=False)  # type: ignore[attr-defined]


def undeploy() -> None:
    """Remove the trivial app from Serve."""
    from ray import serve

    serve.delete(SERVE_APP)
