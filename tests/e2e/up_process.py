"""Test helpers for `genqueue up` run as its own process: start it, watch its port while it starts
and stops, stop it with SIGTERM, and find what it printed that is not its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
# The lines `genqueue up` prints itself; its logs are JSON lines.
OWN = (
    "Store ",
    "API ",
    "Docs ",
    "Pages ",
    "Dashboard ",
    "HAProxy ",
    "Token ",
    "genqueue ready",
    "genqueue stopped",
)


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`genqueue up ARGS` from the repository's root, its stdout and stderr into `log`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "serve_app.cli.main", "up", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**base, **(env or {})},
            cwd=ROOT,
        )


def wait_ready(process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> str:
    """What it printed once ready (it must not have exited)."""
    eventually(
        lambda: "genqueue ready" in log.read_text() or process.poll() is not None,
        timeout=timeout,
        interval=0.2,
        what="genqueue ready",
    )
    assert process.poll() is None, log.read_text()[-3000:]
    return log.read_text()


def stop(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM, then the seconds it took to exit (it is killed after 60)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return time.monotonic() - started


def noise(printed: str) -> list[str]:
    """The lines that are neither genqueue's own nor its JSON logs: Ray's, a traceback."""
    found = []
    for line in printed.splitlines():
        if not line.strip() or line.startswith(OWN):
            continue
        try:
            json.loads(line)
        except ValueError:
            found.append(line)
    return found


class Probe:
    """Sends a submit without a token to `url` every 0.1 s from a thread and keeps what came back:
    (status, Retry-After) for answers, the error's name for no answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[int, str | None] | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(f"{self.url}/v1/tasks", json={}, headers={"connection": "close"})
                    self.seen.append((r.status_code, r.headers.get("retry-after")))
                except httpx.HTTPError as exc:
                    self.seen.append(type(exc).__name__)
                self._stop.wait(0.1)

    def answers(self) -> set[tuple[int, str | None]]:
        """Every distinct (status, Retry-After) answered."""
        return {s for s in self.seen if isinstance(s, tuple)}
