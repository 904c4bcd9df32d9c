"""Bring up and tear down a whole genqueue: config, embedded Valkey (unless given Redis), Ray, the
actors and the Serve deployment, composed here and nowhere else."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from actors.config import Config, load, relaxed_security
from serve_app.haproxy import private_haproxy
from serve_app.private import private_dir, write_private
from serve_app.valkey import embedded_valkey

log = structlog.get_logger("genqueue.runtime")


@dataclass(frozen=True, slots=True)
class Running:
    """Where a running genqueue answers."""

    config: Config
    api_url: str
    dashboard_url: str | None
    # The bundled HAProxy's stats page and Prometheus exporter (None: HAProxy not ours).
    stats_url: str | None = None
    metrics_url: str | None = None


# Serve's direct ingress (each replica serves HTTP itself, behind the bundled HAProxy)
# took 600 simultaneous submits at 219/s against 130/s through the default Python proxy
# on a 2-core machine; set either variable to 0 before starting to use the proxy.
RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # The bundled HAProxy stops routing to a draining replica at once; Serve's 30 s
    # default wait (for outside load balancers) only made every shutdown 30 s longer.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


def ray_environment() -> None:
    """Set genqueue's Ray defaults in this process's environment (inherited by the local Ray)."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def wait_until_ready(api_url: str, timeout: float = 60.0) -> None:
    """Block until /readyz answers 200: serve.run returns before the HTTP listener is up."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{api_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"genqueue did not become ready at {api_url} within {timeout:.0f} s")
        time.sleep(0.1)


def resolve(config: Config) -> Config:
    """The config with an absolute data directory, so actors on other working directories agree.

    The directory is made 0700: it holds the store's connection details and users' images.
    """
    data_dir = private_dir(Path(config.server.data_dir).expanduser().resolve())
    return replace(config, server=replace(config.server, data_dir=str(data_dir)))


def log_relaxed_security(config: Config) -> None:
    """Warn about each security setting that is off, so that none goes unnoticed; whatever
    starts the service calls it once."""
    for setting, meaning in relaxed_security(config):
        log.warning("security setting relaxed", setting=setting, meaning=meaning)


def _ray_init_options(address: str | None, dashboard: bool) -> dict[str, Any]:
    """ray.init arguments: a Ray of our own, an existing cluster (`auto`, `host:port`), or
    Ray Client (`ray://host:10001`), which takes the address alone."""
    if address and "://" in address:
        return {"address": address}
    return {
        # "local": a Ray of our own, even if another cluster runs on this machine.
        "address": address or "local",
        "include_dashboard": dashboard if address is None else None,
        "dashboard_host": "127.0.0.1",
        "logging_level": logging.WARNING,
        "log_to_driver": False,
    }


# Ray, Serve and the app are imported inside the functions below: whoever needs only
# `resolve` or `ray_environment` (the CLI's other commands, tests) does not pay for them.


@contextlib.contextmanager
def running(config: Config, address: str | None = None, dashboard: bool = True) -> Iterator[Running]:
    """A whole genqueue for the duration of the block.

    With `address` it joins that Ray cluster: the actors are found by name or created, and
    on leaving they and the Serve app are left running for the cluster's other `genqueue
    up`s (`genqueue down --address ...` stops them). Without, everything it started stops.
    """
    import ray
    from ray import serve

    from actors import factory
    from serve_app import ingress

    config = resolve(config)
    ray_environment()
    joined = address is not None
    with contextlib.ExitStack() as stack:
        # On a cluster joined, HAProxy runs as the cluster's own environment says.
        haproxy = None if joined else stack.enter_context(private_haproxy(config.server))
        if not config.redis.url:
            if joined:
                log.warning("no [redis] url: the embedded Valkey on this machine serves the whole cluster")
            url = stack.enter_context(embedded_valkey(Path(config.server.data_dir) / "valkey"))
            config = replace(config, redis=replace(config.redis, url=url))
        started_ray = not ray.is_initialized()
        if started_ray:
            info = ray.init(**_ray_init_options(address, dashboard))
            stack.callback(ray.shutdown)
            dash = getattr(info, "dashboard_url", None) if dashboard else None
        else:
            dash = None
        factory.start(config)
        if not joined:
            stack.callback(factory.stop, config)
        url_file = Path(config.server.data_dir) / "redis-url"
        write_private(url_file, config.redis.url)
        stack.callback(url_file.unlink, missing_ok=True)
        ingress.run(config, config.server.replicas, haproxy.environment() if haproxy else None)
        if not joined:
            stack.callback(serve.shutdown)
        host = "127.0.0.1" if config.server.host in ("0.0.0.0", "::") else config.server.host
        api_url = f"http://{host}:{config.server.port}"
        wait_until_ready(api_url)
        yield Running(
            config=config,
            api_url=api_url,
            dashboard_url=f"http://{dash}" if dash and not dash.startswith("http") else dash,
            stats_url=f"http://{host}:{haproxy.stats_port}/stats" if haproxy else None,
            metrics_url=f"http://{host}:{haproxy.metrics_port}/metrics" if haproxy else None,
        )


def deployed(config_file: str | None) -> Any:
    """The ingress for a Ray that `serve deploy` runs: the config from `config_file` (and
    GENQUEUE_* variables), its actors found or started; the store must be given."""
    from actors import factory
    from serve_app import ingress

    config = resolve(load(config_file))
    if not config.redis.url:
        raise ValueError("serve deploy needs a Redis: set [redis] url or GENQUEUE_REDIS_URL")
    log_relaxed_security(config)
    factory.start(config)
    return ingress.build(config, config.server.replicas)


def down(config: Config, address: str) -> None:
    """Stop this namespace's actors and the Serve app on the cluster at `address`."""
    import ray
    from ray import serve

    from actors import factory
    from serve_app import ingress

    ray.init(**_ray_init_options(address, dashboard=False))
    try:
        with contextlib.suppress(Exception):  # no Serve app running is fine
            serve.delete(ingress.APP_NAME)
        factory.stop(config)
    finally:
        ray.shutdown()
