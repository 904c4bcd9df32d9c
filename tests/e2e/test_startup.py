"""`genqueue up` as a user meets it: a start-up failure is one or two lines within seconds; two
instances run side by side, each answering 503 with Retry-After (never a 404) while it starts and
stops; the token and dashboard instructions it prints work; SIGTERM stops it within 10 s, quietly."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.up_process import ROOT, Probe, noise, start, stop, wait_ready


def test_start_up_failures_are_one_or_two_lines_within_seconds(tmp_path: Path) -> None:
    """A port in use, a URL that is not Redis's and a Redis that is not there: each exits non-zero
    in seconds, before Ray starts, naming the setting, without a traceback."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        cases = {
            "server.port": ([f"--port={taken}"], {}),
            "GENQUEUE_REDIS_URL 'localhost:6379' is not a Redis URL": (
                [],
                {"GENQUEUE_REDIS_URL": "localhost:6379"},
            ),
            "GENQUEUE_REDIS_URL: cannot reach": (
                [],
                {"GENQUEUE_REDIS_URL": f"redis://127.0.0.1:{free_port()}"},
            ),
        }
        for named, (args, env) in cases.items():
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "serve_app.cli.main", "up", f"--port={free_port()}", *args],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
                env={**_environment(), **env},
            )
            seconds = time.monotonic() - started
            assert result.returncode == 1 and seconds < 10, (seconds, result)
            assert result.stdout == "" and 1 <= len(result.stderr.splitlines()) <= 2, result.stderr
            assert result.stderr.startswith(f"genqueue up: {named}") and "Traceback" not in result.stderr


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "GENQUEUE_"))}


CONFIG = """
[server]
port = {port}
{data_dir}
[queue]
workers = 1
"""


def test_two_instances_side_by_side(tmp_path: Path) -> None:
    """Two instances with their own ports and data dirs; A found by its config alone, B by its
    data dir. Each `Token` line makes an admin token for its own instance only, each dashboard
    opens with Ray's token and lists genqueue's actors by name, and each stops within 10 s."""
    ports = {"a": free_port(), "b": free_port()}
    (tmp_path / "a.toml").write_text(
        CONFIG.format(port=ports["a"], data_dir=f'data_dir = "{tmp_path / "a"}"')
    )
    (tmp_path / "b.toml").write_text(CONFIG.format(port=ports["b"], data_dir=""))
    args = {
        "a": ["--config", str(tmp_path / "a.toml")],
        "b": ["--config", str(tmp_path / "b.toml"), "--data-dir", str(tmp_path / "b")],
    }
    logs = {name: tmp_path / f"{name}.log" for name in ports}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
    with Probe(urls["a"]) as probe:
        processes = {name: start(args[name], logs[name], env) for name in ports}
        try:
            printed = {name: wait_ready(processes[name], logs[name]) for name in ports}
            tokens = {name: _made_by_token_line(printed[name]) for name in ports}
            for mine, other in (("a", "b"), ("b", "a")):
                auth = {"Authorization": f"Bearer {tokens[mine]}"}
                assert httpx.get(f"{urls[mine]}/v1/queue", headers=auth, timeout=30).status_code == 200
                assert httpx.get(f"{urls[other]}/v1/queue", headers=auth, timeout=30).status_code == 401
            dashboards = {name: _dashboard_lists_genqueue(printed[name]) for name in ports}
            assert dashboards["a"] != dashboards["b"]
        finally:
            seconds = {name: stop(process) for name, process in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 0 and seconds[name] < 10, (name, seconds, logs[name].read_text()[-2000:])
        assert logs[name].read_text().rstrip().endswith("genqueue stopped")
        assert noise(logs[name].read_text()) == []
    answers = probe.answers()
    assert answers <= {(503, "2"), (401, None)} and (503, "2") in answers, probe.seen


def _made_by_token_line(printed: str) -> str:
    """Run the `Token` line as printed, from where `genqueue up` ran; the token it prints."""
    line = re.search(r"^Token +(.+)$", printed, re.MULTILINE)
    assert line, printed
    made = subprocess.run(shlex.split(line[1]), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def _dashboard_lists_genqueue(printed: str) -> str:
    """The dashboard refuses a call without Ray's token; with the one the printed command gives,
    it lists the queue, key pool, workers, janitor and the Serve app's replica. Its URL."""
    line = r"^Dashboard +(\S+) +\(Ray's; it asks for the token `(.+) get-auth-token` prints\)$"
    shown = re.search(line, printed, re.MULTILINE)
    assert shown, printed
    url, ray = shown.groups()
    token = subprocess.run(
        [*shlex.split(ray), "get-auth-token"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert httpx.get(f"{url}/api/v0/actors", timeout=30).status_code == 401
    listed = httpx.get(
        f"{url}/api/v0/actors",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {token.stdout.strip()}"},
        timeout=60,
    )
    assert listed.status_code == 200, listed.text
    actors = {(a["class_name"], a.get("name", "")) for a in listed.json()["data"]["result"]["result"]}
    expected = {("Queue", "queue"), ("KeyPool", "keypool"), ("Worker", "worker-0"), ("Janitor", "janitor")}
    assert expected <= actors, actors
    assert any(cls == "ServeReplica:genqueue:ingress" for cls, _ in actors), actors
    return url
