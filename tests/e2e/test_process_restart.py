"""The whole genqueue process stopped with SIGTERM mid-burst and started again: every task ends once,
the stop takes under 10 s and prints nothing of Ray's, and the API answers 503, never 404, meanwhile."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serve_app.cli.burst import payload
from serve_app.cli.ops import run_audit
from tests.conftest import free_port
from tests.e2e.up_process import Probe, noise
from tests.helpers import eventually

CONFIG = """
[auth]
required = false
[credits]
enabled = false
[queue]
slots = 4
lease_seconds = 60
per_user_running = 0
[provider]
latency_seconds = 0.4
latency_jitter = 0.0
image_size = "512"
[[pools]]
name = "p1"
rpm = 60000
keys = ["k"]
window_seconds = 1.0
"""


def _start(config: Path, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serve_app.cli.main",
                "up",
                "--config",
                str(config),
                "--port",
                str(port),
                "--data-dir",
                str(data),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    eventually(
        lambda: "genqueue ready" in log.read_text() or process.poll() is not None,
        timeout=120,
        interval=0.2,
        what="genqueue ready",
    )
    assert process.poll() is None, log.read_text()[-2000:]
    return process


def _stop(process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=90)
    return time.monotonic() - started


def test_stop_and_start_mid_burst(tmp_path: Path) -> None:
    """SIGTERM with tasks waiting and running; after a restart on the same data dir all 30 succeed
    once. The stop takes under 10 s without Ray's noise, and while genqueue is down and starting
    again every answer is the 503 with Retry-After or the API's own (never Ray's 404 or 500)."""
    config, data, port = tmp_path / "c.toml", tmp_path / "data", free_port()
    config.write_text(CONFIG)
    process = _start(config, data, port, tmp_path / "first.log")
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            ids = [
                client.post("/v1/tasks", json=payload(i, "photography")).json()["task_id"] for i in range(30)
            ]
            eventually(
                lambda: client.get("/v1/queue").json()["succeeded"] >= 6, timeout=60, what="6 succeeded"
            )
            queue = client.get("/v1/queue").json()
            assert queue["waiting"] + queue["running"] > 0
        with Probe(url) as probe:
            seconds = _stop(process)
            process = _start(config, data, port, tmp_path / "second.log")
        first = (tmp_path / "first.log").read_text()
        assert process.poll() is None and seconds < 10 and first.rstrip().endswith("genqueue stopped"), first
        assert noise(first) == []
        # An empty body is a 422 from the app itself; the rest of the time, the 503.
        assert probe.answers() <= {(503, "2"), (422, None)} and (503, "2") in probe.answers(), probe.seen
        with httpx.Client(base_url=url, timeout=30) as client:

            def all_succeeded() -> bool:
                return all(client.get(f"/v1/tasks/{t}").json()["status"] == "succeeded" for t in ids)

            eventually(all_succeeded, timeout=120, interval=0.5, what="all 30 succeeded after the restart")
        store_url = (data / "redis-url").read_text()
        result = asyncio.run(run_audit(store_url, "default", slots=4))
        assert result.violations == []
        assert result.report.ended == {"succeeded": 30} and result.report.still_live == 0
    finally:
        if process.poll() is None:
            _stop(process)
