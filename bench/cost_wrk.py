"""Closed-loop submit load for bench/cost.py: `wrk` with a Lua script when it is installed, else
the aiohttp client of bench/cost_client.py in a process of its own.

wrk (C, one event loop per thread) is no bottleneck at thousands of requests a second on one
core; the Python client may be, near the bare-uvicorn yardstick's rate. Install wrk with
`sudo apt-get install -y wrk` (Debian, Ubuntu) or `brew install wrk` (macOS).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRK_MISSING = (
    "wrk is not installed: the closed-loop load runs on the Python client instead "
    "(install it with `sudo apt-get install -y wrk`, or `brew install wrk`)"
)

# Each thread keeps its own Lua state: requests are built once per thread in init(), one per
# token, and sent round robin from a thread's own offset; statuses are counted per thread and
# summed in done(), which prints one JSON line.
LUA = r"""
local tokens_file, body_file, path = @TOKENS@, @BODY@, @PATH@
local requests, counter, threads = {}, 0, {}
statuses = {}  -- a global: done() reads each thread's with thread:get

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(body_file, "rb"))
  local body = f:read("*a")
  f:close()
  for line in io.lines(tokens_file) do
    local headers = {["Content-Type"] = "application/json"}
    if line ~= "" then headers["Authorization"] = "Bearer " .. line end
    table.insert(requests, wrk.format("POST", path, headers, body))
  end
  counter = (thread_index or 0) * 7919
end

function request()
  counter = counter + 1
  return requests[(counter % #requests) + 1]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, n in pairs(counts) do all[status] = (all[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(all) do table.insert(parts, string.format('"%d":%d', status, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors":%d,"timeouts":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect + e.read + e.write, e.timeout,
    table.concat(parts, ",")))
end
"""


def lua_script(tokens: Path, body: Path, path: str) -> str:
    """The Lua script for wrk, with its files and request path filled in."""
    text = LUA
    for name, value in (("@TOKENS@", str(tokens)), ("@BODY@", str(body)), ("@PATH@", path)):
        text = text.replace(name, json.dumps(value))  # a JSON string is a Lua string here
    return text


@dataclass(slots=True)
class LoadResult:
    """What one closed-loop run measured."""

    tool: str
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # connection errors and timeouts
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0

    @property
    def accepted(self) -> int:
        """Requests answered 202."""
        return self.statuses.get(202, 0)

    @property
    def rate(self) -> float:
        """202s per second."""
        return round(self.accepted / self.seconds, 1) if self.seconds else 0.0

    def figures(self) -> dict[str, object]:
        """The run as JSON figures."""
        return {
            "tool": self.tool,
            "per_second": self.rate,
            "p50_ms": round(self.p50_ms, 1),
            "p90_ms": round(self.p90_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "max_ms": round(self.max_ms, 1),
            "seconds": round(self.seconds, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
        }


def parse_wrk(stdout: str) -> LoadResult:
    """The figures of the JSON line the Lua script's done() prints."""
    line = next((x for x in stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures: {stdout[-300:]!r}")
    data = json.loads(line.removeprefix("WRKJSON "))
    return LoadResult(
        tool="wrk",
        seconds=data["duration_us"] / 1e6,
        statuses={int(k): int(v) for k, v in data["statuses"].items()},
        errors=int(data["errors"]) + int(data["timeouts"]),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def _nice(level: int) -> None:
    if level:
        os.nice(level)


def closed_loop(
    url: str,
    path: str,
    tokens: Sequence[str],
    body: bytes,
    clients: int,
    seconds: float,
    nice: int = 0,
    tool: str = "auto",
) -> LoadResult:
    """`clients` keep-alive connections, each posting `body` to `path` again as soon as it is
    answered, for `seconds`; each request carries the next of `tokens` ("" for none)."""
    work = Path(tempfile.mkdtemp(prefix="genqueue-cost-"))
    try:
        (work / "tokens").write_text("\n".join(tokens or [""]) + "\n")
        (work / "body").write_bytes(body)
        wrk = shutil.which("wrk")
        if tool == "wrk" or (tool == "auto" and wrk):
            if wrk is None:
                raise SystemExit(WRK_MISSING)
            script = work / "submit.lua"
            script.write_text(lua_script(work / "tokens", work / "body", path))
            threads = min(clients, max(1, min(2, os.cpu_count() or 1)))
            command = [wrk, f"-t{threads}", f"-c{clients}", f"-d{seconds:.0f}s", "--timeout", "30s"]
            done = subprocess.run(
                [*command, "-s", str(script), url],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
                check=False,
                preexec_fn=lambda: _nice(nice),
            )
            return parse_wrk(done.stdout)
        return python_closed_loop(url, path, work, clients, seconds, nice)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def python_closed_loop(
    url: str, path: str, work: Path, clients: int, seconds: float, nice: int
) -> LoadResult:
    """The same load from bench/cost_client.py in a process of its own."""
    client = Path(__file__).with_name("cost_client.py")
    args = ["closed", "--url", url, "--path", path, "--tokens", str(work / "tokens")]
    args += ["--body", str(work / "body"), "--clients", str(clients), "--seconds", str(seconds)]
    data = run_client(client, args, nice, seconds + 120)
    return LoadResult(
        tool="aiohttp",
        seconds=float(data["seconds"]),
        statuses={int(k): int(v) for k, v in data["statuses"].items()},
        errors=int(data["errors"]),
        p50_ms=float(data["p50_ms"]),
        p90_ms=float(data["p90_ms"]),
        p99_ms=float(data["p99_ms"]),
        max_ms=float(data["max_ms"]),
    )


def run_client(script: Path, args: list[str], nice: int, timeout: float) -> dict[str, Any]:
    """Run bench/cost_client.py with `args` and return the JSON line it prints last."""
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=lambda: _nice(nice),
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise RuntimeError(f"the load client exited {done.returncode}: {tail}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def client_run(
    mode: str, url: str, tokens: Sequence[str], body: bytes, extra: list[str], nice: int, timeout: float
) -> dict[str, Any]:
    """bench/cost_client.py in `mode` against `url` with these tokens (one a line) and body."""
    with tempfile.TemporaryDirectory(prefix="genqueue-cost-") as work:
        Path(work, "tokens").write_text("\n".join(tokens) + "\n")
        Path(work, "body").write_bytes(body)
        args = [mode, "--url", url, "--tokens", str(Path(work, "tokens")), "--body", str(Path(work, "body"))]
        return run_client(Path(__file__).with_name("cost_client.py"), [*args, *extra], nice, timeout)
