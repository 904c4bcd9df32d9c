"""`genqueue up` as operators run it: it listens on its host only and keeps its files private."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from tests.conftest import free_port
from tests.helpers import eventually

CONFIG = """
[auth]
required = false
[server]
host = "127.0.0.1"
"""
# Where Ray's HAProxy would listen by default (stats page, exporter, fallback proxy).
RAY_FIXED_PORTS = (8404, 9101, 8500)


@contextlib.contextmanager
def _taken(ports: tuple[int, ...]) -> Iterator[None]:
    """Hold `ports` on every interface, as a second instance on this machine would."""
    held = []
    for port in ports:
        sock = socket.socket()
        try:
            sock.bind(("0.0.0.0", port))
            sock.listen()
            held.append(sock)
        except OSError:  # already taken by something else: just as good
            sock.close()
    try:
        yield
    finally:
        for sock in held:
            sock.close()


def _listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net shows them) that listen on TCP `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


LOOPBACK = "0100007F"  # 127.0.0.1 in /proc/net/tcp's byte order


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`."""
    parents: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def _haproxy_config(pid: int) -> Path | None:
    """The config file of an HAProxy that `genqueue up` (process `pid`) started, if one runs."""
    for child in _descendants(pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
            if Path(argv[0]).name == "haproxy" and "-f" in argv:
                return Path(argv[argv.index("-f") + 1])
    return None


def _loose(paths: list[Path]) -> dict[str, str]:
    """Which of `paths` are open beyond their owner: a directory not 0700, a file not 0600."""
    found = {}
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            found[str(path)] = oct(mode)
    return found


def test_genqueue_up_listens_on_its_host_only_and_keeps_its_files_private(tmp_path: Path) -> None:
    """With Ray's fixed HAProxy ports taken, `genqueue up` starts; HAProxy's stats page and exporter
    listen on 127.0.0.1 only, its admin socket is 0600, the embedded Valkey refuses a client without
    its password, the data files are the owner's only, and the relaxed auth is logged once."""
    config, data, port, log = tmp_path / "c.toml", tmp_path / "data", free_port(), tmp_path / "up.log"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    argv = [sys.executable, "-m", "serve_app.cli.main", "up", "--config", str(config), "--port", str(port)]
    with _taken(RAY_FIXED_PORTS), log.open("ab") as out:
        process = subprocess.Popen(
            [*argv, "--data-dir", str(data)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        try:
            eventually(
                lambda: "genqueue ready" in log.read_text() or process.poll() is not None,
                timeout=150,
                interval=0.2,
                what="genqueue ready",
            )
            assert process.poll() is None, log.read_text()[-3000:]
            printed = log.read_text()
            shown = re.search(r"HAProxy +(\S+) +(\S+)", printed)
            assert shown, printed
            stats_url, metrics_url = shown.groups()
            for url in (stats_url, metrics_url):
                assert httpx.get(url, timeout=10).status_code == 200
                assert _listening(urlsplit(url).port or 0) == {LOOPBACK}, url
            assert _listening(port) == {LOOPBACK}

            haproxy = eventually(lambda: _haproxy_config(process.pid), what="haproxy running")
            admin = haproxy.parent / "admin.sock"
            assert stat.S_ISSOCK(admin.stat().st_mode) and stat.S_IMODE(admin.stat().st_mode) == 0o600
            assert _loose([haproxy.parent.parent]) == {}

            store_url = (data / "redis-url").read_text()
            valkey_port, password = urlsplit(store_url).port, urlsplit(store_url).password
            assert valkey_port and password and _listening(valkey_port) == {LOOPBACK}
            with (
                redis.Redis(port=valkey_port, protocol=2) as anonymous,
                pytest.raises(redis.exceptions.AuthenticationError, match="Authentication required"),
            ):
                anonymous.hset("genqueue:default:tokens", "forged", "admin")
            with redis.Redis.from_url(store_url) as client:
                assert client.ping() is True
            valkey_files = [data / "valkey", *(data / "valkey").rglob("*")]
            assert any(p.suffix == ".aof" for p in valkey_files)
            assert _loose([data, data / "redis-url", *valkey_files]) == {}
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=90)
    printed = log.read_text()
    assert password not in printed and f"redis://:***@127.0.0.1:{valkey_port}" in printed
    assert printed.count("security setting relaxed") == 1 and "auth.required" in printed
    assert not haproxy.parent.parent.exists()
