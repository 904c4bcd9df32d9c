"""The Ray Serve deployment: the FastAPI app as a light ingress with many requests in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import ray
from ray import serve
from ray.serve.schema import LoggingConfig

from actors import factory
from actors.config import Config
from serve_app.http.app import create_app
from serve_app.http.problems import Unavailable

APP_NAME = "genqueue"


def build(config: Config, replicas: int = 1) -> Any:
    """The bound Serve application for `config`: `replicas` ingress replicas, each reserving
    `[server] replica_cpus` CPUs, without Serve's per-request access log."""

    async def actors_alive() -> bool:
        try:
            queue = factory.get(config, factory.QUEUE_NAME)
            keypool = factory.get(config, factory.KEYPOOL_NAME)
            await asyncio.wait_for(asyncio.gather(queue.ping.remote(), keypool.status.remote()), 5)
        except (ValueError, TimeoutError, ray.exceptions.RayError):
            return False
        return True

    async def cancel(task_id: str) -> str:
        try:
            queue = factory.get(config, factory.QUEUE_NAME)
            outcome: str = await asyncio.wait_for(queue.cancel.remote(task_id), 30)
        except (ValueError, TimeoutError, ray.exceptions.RayError) as exc:
            raise Unavailable("the queue did not answer; try again shortly") from exc
        return outcome

    app = create_app(config, readiness=actors_alive, canceller=cancel)

    @serve.deployment(
        name="ingress",
        num_replicas=replicas,
        max_ongoing_requests=1000,
        # A submit finishes in milliseconds; do not hold a shutdown for long.
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=5,
        ray_actor_options={
            "num_cpus": config.server.replica_cpus,
            "resources": dict(config.server.replica_resources),
        },
        # No access log line per request (formatted and written for every submit); Serve's
        # own warnings and errors, genqueue's logs and the problem bodies stay.
        logging_config=LoggingConfig(enable_access_log=False),
    )
    @serve.ingress(app)
    class Ingress:
        """Stateless: every request reads or appends to the event store."""

    return Ingress.bind()  # type: ignore[attr-defined]


def run(config: Config, replicas: int = 1, controller_env: Mapping[str, str] | None = None) -> None:
    """Deploy the app on the running Ray and wait until it serves.

    `controller_env` reaches the Serve controller and the proxies it starts (HAProxy's settings
    among them); it applies when this call starts the controller.
    """
    options = {"runtime_env": {"env_vars": dict(controller_env)}} if controller_env else None
    serve.start(
        http_options={"host": config.server.host, "port": config.server.port}, controller_options=options
    )
    serve.run(build(config, replicas), name=APP_NAME, route_prefix="/", blocking=False)
