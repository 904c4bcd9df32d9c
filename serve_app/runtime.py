"""Bring up and tear down a whole genqueue: config, embedded Valkey (unless given Redis), Ray, the
actors and the Serve deployment, composed here and nowhere else."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from actors.config import Config, load, redact_url, relaxed_security
from events.errors import GenqueueError
from serve_app.haproxy import Standby, private_haproxy
from serve_app.private import private_dir, write_private
from serve_app.valkey import StoreInUseError, embedded_valkey

log = structlog.get_logger("genqueue.runtime")

# In the data directory while an instance runs: its store's URL alone (for scripts), and
# what the other `genqueue` commands need to act on the same store (pid, API, store, namespace).
URL_FILE = "redis-url"
RUN_FILE = "run.json"


class StartupError(GenqueueError):
    """genqueue cannot start as configured; the message names the setting and what to do."""


@dataclass(frozen=True, slots=True)
class Running:
    """Where a running genqueue answers."""

    config: Config
    api_url: str
    dashboard_url: str | None
    # The bundled HAProxy's stats page and Prometheus exporter (None: HAProxy not ours).
    stats_url: str | None = None
    metrics_url: str | None = None
    # Whether the Ray dashboard asks for Ray's token (`ray get-auth-token` prints it).
    dashboard_token: bool = False


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
    # Serve's controller steps its loop every 0.1 s by default, each step asking the GCS for
    # every node's resources: 3.6 % of a core for the controller and 2.1 % for the GCS on an
    # idle genqueue. Every 0.5 s: 1.3 % and 1.0 %; a stop takes 0.9 s longer, a start no longer.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    # A replica runs genqueue's handlers on the event loop of its HTTP server, not on a second
    # loop in a thread of its own: every request and every body chunk was handed from one loop
    # to the other under the one GIL. 100 keep-alive clients, 2 pairs: ingress CPU 2.64, 2.83
    # -> 2.21, 2.19 ms a submit, 276, 253 -> 326, 330 submits/s. The handlers are async and
    # hold the loop only for short steps.
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # Ray's HAProxy writes a line per request to a socket that its manager actor parses in
    # Python for Ray's own per-request HTTP series; HAProxy's exporter (`metrics_url`) counts
    # the same requests, statuses and times itself. 200 keep-alive clients, 3 pairs: Serve's
    # controller and proxies 0.24, 0.22, 0.25 -> 0.16, 0.12, 0.13 ms of CPU a task.
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
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
    wanted = Path(config.server.data_dir).expanduser().resolve()
    try:
        data_dir = private_dir(wanted)
    except OSError as exc:
        raise StartupError(
            f"server.data_dir {wanted}: {exc.strerror}; choose a directory you can write "
            "(--data-dir or [server] data_dir)"
        ) from None
    return replace(config, server=replace(config.server, data_dir=str(data_dir)))


def check_port(host: str, port: int, setting: str) -> None:
    """StartupError unless a listener could bind `host:port` now (a TIME_WAIT left by a stopped
    instance does not count)."""
    flag = "--port or [server] port" if setting == "server.port" else f"[server] {setting[7:]}"
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise StartupError(
            f"server.host {host!r}: {exc.strerror}; use an address of this machine (--host or [server] host)"
        ) from None
    with socket.socket(family, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = f"{host}:{port} is in use by another program; stop it or choose a free port"
            elif exc.errno == errno.EADDRNOTAVAIL:
                raise StartupError(
                    f"server.host {host!r} is not an address of this machine (--host or [server] host)"
                ) from None
            else:
                why = f"cannot listen on {host}:{port} ({exc.strerror}); choose another port"
            raise StartupError(f"{setting} {port}: {why} ({flag})") from None


def check_redis(url: str) -> None:
    """StartupError unless `url` is a Redis URL whose server answers PING within a few seconds."""
    import redis

    setting = "GENQUEUE_REDIS_URL" if os.environ.get("GENQUEUE_REDIS_URL") == url else "redis.url"
    shown = redact_url(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except ValueError as exc:
        raise StartupError(
            f"{setting} {shown!r} is not a Redis URL ({exc}); "
            "write redis://[USER:PASSWORD@]HOST:PORT[/DB], or rediss:// for TLS"
        ) from None
    try:
        with client:
            client.ping()
    except redis.AuthenticationError as exc:
        raise StartupError(
            f"{setting}: {shown} refused the login ({exc}); check the URL's user and password"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise StartupError(
            f"{setting}: cannot reach {shown} ({why}); start that Redis or fix the URL"
        ) from None
    except redis.RedisError as exc:
        raise StartupError(
            f"{setting}: {shown} did not answer PING as Redis does ({exc}); check the host and port"
        ) from None


def preflight(config: Config, joined: bool) -> None:
    """Fail in a second, naming the setting, where Ray would fail after many: the ports genqueue
    listens on must be free (unless it joins a cluster, whose HAProxy is the cluster's) and a
    given Redis must answer."""
    if not joined:
        s = config.server
        check_port(s.host, s.port, "server.port")
        for setting, port in (
            ("server.haproxy_stats_port", s.haproxy_stats_port),
            ("server.haproxy_metrics_port", s.haproxy_metrics_port),
        ):
            if port:
                check_port(s.host, port, setting)
    if config.redis.url:
        check_redis(config.redis.url)


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


def _write_run_files(config: Config, api_url: str) -> None:
    """Say in the data directory which store this instance runs on (both files 0600)."""
    data = Path(config.server.data_dir)
    write_private(data / URL_FILE, config.redis.url)
    about = {
        "pid": os.getpid(),
        "api_url": api_url,
        "port": config.server.port,
        "store_url": config.redis.url,
        "namespace": config.redis.namespace,
    }
    write_private(data / RUN_FILE, json.dumps(about))


def _remove_run_files(config: Config) -> None:
    for name in (RUN_FILE, URL_FILE):
        (Path(config.server.data_dir) / name).unlink(missing_ok=True)


def _import_ray() -> Any:
    """Ray, imported without the crash handler it would install in this process, which turns a
    SIGTERM into a stack dump and an abrupt exit that skips genqueue's clean-up. The flag is
    read once, at import; Ray's own processes, started later, keep their handler."""
    flag = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"
    given = flag in os.environ
    os.environ.setdefault(flag, "1")
    try:
        import ray
    finally:
        if not given:
            del os.environ[flag]
    return ray


def _init_keeping_sigterm(ray: Any, options: dict[str, Any]) -> Any:
    """ray.init, after which SIGTERM does what it did before (ray.init makes it `sys.exit`)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        return ray.init(**options)
    except SystemExit as exc:
        # A SIGTERM during ray.init: handled as the caller would have handled it.
        if exc.code == signal.SIGTERM and callable(previous):
            signal.signal(signal.SIGTERM, previous)
            previous(signal.SIGTERM, None)
        raise
    finally:
        if previous is not None and signal.getsignal(signal.SIGTERM) not in (previous, signal.SIG_IGN):
            signal.signal(signal.SIGTERM, previous)


def _quietly(action: Any) -> None:
    """Run a clean-up step whose failure must not stop the ones after it."""
    with contextlib.suppress(Exception):
        action()


# Ray, Serve and the app are imported inside the functions below: whoever needs only
# `resolve` or `ray_environment` (the CLI's other commands, tests) does not pay for them.


@contextlib.contextmanager
def running(config: Config, address: str | None = None, dashboard: bool = True) -> Iterator[Running]:
    """A whole genqueue for the duration of the block.

    With `address` it joins that Ray cluster: the actors are found by name or created, and
    on leaving they and the Serve app are left running for the cluster's other `genqueue
    up`s (`genqueue down --address ...` stops them). Without, everything it started stops.

    The ports and a given Redis are checked before anything starts (StartupError). From then
    until the app answers, and again while it stops, the API's port answers every request
    503 with Retry-After.
    """
    config = resolve(config)
    joined = address is not None
    preflight(config, joined)
    ray_environment()
    ray = _import_ray()
    from ray import serve

    from actors import factory
    from serve_app import ingress

    # Serve's start-up notes ("Started Serve…", "Application … is ready") repeat genqueue's own,
    # and Ray's note that its token authentication is on is said by `genqueue up` with how to
    # open the dashboard (Ray's own default for a cluster of its own: RAY_AUTH_MODE unset).
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    host = "127.0.0.1" if config.server.host in ("0.0.0.0", "::") else config.server.host
    api_url = f"http://{host}:{config.server.port}"
    with contextlib.ExitStack() as stack:
        # On a cluster joined, HAProxy runs as the cluster's own environment says.
        haproxy = None if joined else stack.enter_context(private_haproxy(config.server))
        standby = None if joined else Standby(config.server.host, config.server.port)
        if standby is not None:
            standby.open()
            stack.callback(standby.close)
        if not config.redis.url:
            if joined:
                log.warning("no [redis] url: the embedded Valkey on this machine serves the whole cluster")
            try:
                url = stack.enter_context(embedded_valkey(Path(config.server.data_dir) / "valkey"))
            except StoreInUseError as exc:
                raise StartupError(
                    f"server.data_dir {config.server.data_dir}: {exc}; give each instance its own --data-dir"
                ) from None
            config = replace(config, redis=replace(config.redis, url=url))
        _write_run_files(config, api_url)
        stack.callback(_remove_run_files, config)
        started_ray = not ray.is_initialized()
        dash = None
        if started_ray:
            info = _init_keeping_sigterm(ray, _ray_init_options(address, dashboard))
            stack.callback(ray.shutdown)
            dash = getattr(info, "dashboard_url", None) if dashboard else None
        factory.start(config)
        if not joined and not started_ray:
            # A Ray of its own takes its actors with it (ray.shutdown); killing them one by one
            # first would only make their callers' retries print on the way out.
            stack.callback(factory.stop, config)
        if standby is not None and haproxy is None:
            standby.close()  # Serve's own proxy takes the port, and shares it with no one
        ingress.run(config, config.server.replicas, haproxy.environment() if haproxy else None)
        if started_ray and haproxy is not None and haproxy.stoppable():
            # A Ray of its own goes whole (ray.shutdown) once its HAProxy, a process of Serve's
            # proxy actor, has stopped; Serve's graceful shutdown would wait for its controller
            # up to 30 s and leave a failed retry of that wait on the console.
            stack.callback(haproxy.stop)
        elif not joined and (not started_ray or haproxy is not None):
            stack.callback(serve.shutdown)  # a shared Ray goes on; or HAProxy stopped by Serve
        if standby is not None and haproxy is not None:
            stack.callback(_quietly, standby.open)  # the first step on the way out
        wait_until_ready(api_url)
        if standby is not None:
            standby.close()
        yield Running(
            config=config,
            api_url=api_url,
            dashboard_url=f"http://{dash}" if dash and not dash.startswith("http") else dash,
            stats_url=f"http://{host}:{haproxy.stats_port}/stats" if haproxy else None,
            metrics_url=f"http://{host}:{haproxy.metrics_port}/metrics" if haproxy else None,
            dashboard_token=bool(dash) and os.environ.get("RAY_AUTH_MODE", "").lower() == "token",
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
