"""Run as a script: genqueue on a real multi-node Ray cluster started with `ray start`.

A head (`ray start --head`, resource `genqueue_head`) and a worker node (`ray start
--address`, resource `genqueue_worker`) run as separate process groups on this machine;
`genqueue up --address` joins them with workers placed on the worker node. A burst goes in
over HTTP; once a third has succeeded the worker node is killed, and a replacement node
with the resource joins (as an autoscaler would bring one): the tasks of the dead workers
come back when their leases expire. Prints one JSON line of figures from the event log.
Everything it starts runs in its own process groups and is killed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from events.catalogue import TaskSucceeded
from serve_app.cli.burst import payload
from serve_app.cli.ops import run_audit
from serve_app.haproxy import processes_on
from tests.conftest import free_port
from tests.helpers import eventually

BIN = Path(sys.executable).parent
TASKS = 36
CONFIG = """
[auth]
required = false
[credits]
enabled = false
[queue]
slots = 6
workers = 2
lease_seconds = 6
# A dead node's attempts expire; until the replacement node's workers are up, retries can
# expire too: enough attempts that a slow replacement fails no task.
max_attempts = 8
per_user_running = 0
worker_resources = {{ genqueue_worker = 1 }}
singleton_resources = {{ genqueue_head = 0.1 }}
[server]
replica_resources = {{ genqueue_head = 0.1 }}
[provider]
latency_seconds = 0.5
latency_jitter = 0.1
image_size = "512"
[redis]
namespace = "multinode"
[[pools]]
name = "p1"
rpm = 60000
keys = ["test-key-multinode-0000000001"]
window_seconds = 1.0
"""


def env(tmp: Path) -> dict[str, str]:
    """Ray's settings for every process of this cluster (token auth off: local test cluster),
    its HAProxy's files under `tmp`/h, where `cluster` finds the HAProxy to stop. (HAProxy takes
    socket paths of at most 97 characters, and Ray adds a 56-character node id: `tmp` is short.)"""
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    haproxy = tmp / "h"
    haproxy.mkdir(exist_ok=True)
    e.update(
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_SERVE_ENABLE_DIRECT_INGRESS="1",
        RAY_SERVE_ENABLE_HA_PROXY="1",
        RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
        RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
        RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(haproxy / "haproxy.cfg"),
        RAY_SERVE_HAPROXY_SOCKET_PATH=str(haproxy / "admin.sock"),
        RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(haproxy),
        RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(haproxy / "server-state"),
        RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH=str(haproxy / "metrics.sock"),
        # Not Serve's fixed 8500 for the head's fallback proxy: another test on this machine
        # may hold it (the deployment test takes it on purpose).
        RAY_SERVE_FALLBACK_PROXY_HTTP_PORT=str(free_port()),
    )
    return e


def ray_start(args: list[str], log: Path) -> int:
    """`ray start …` in a new process group (its raylet and workers stay in it); the group id."""
    with log.open("ab") as out:
        p = subprocess.Popen(
            [str(BIN / "ray"), "start", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env(log.parent),
            start_new_session=True,
        )
    if p.wait(timeout=120) != 0:
        raise SystemExit(f"ray start {args} failed: {log.read_text()[-1500:]}")
    return p.pid


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def cluster(tmp: Path) -> Iterator[tuple[str, list[int]]]:
    port = free_port()
    groups: list[int] = []
    try:
        groups.append(
            ray_start(
                [
                    "--head",
                    "--port",
                    str(port),
                    "--num-cpus",
                    "2",
                    "--include-dashboard=false",
                    "--resources",
                    '{"genqueue_head":1}',
                ],
                tmp / "head.log",
            )
        )
        yield f"127.0.0.1:{port}", groups
    finally:
        for pgid in groups:
            kill_group(pgid)
        # HAProxy reloads start a process of their own, outside the groups: stop them by the
        # files they run on, which are this cluster's alone.
        for pid in processes_on(tmp / "h"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def add_worker_node(address: str, tmp: Path, groups: list[int]) -> int:
    pgid = ray_start(
        ["--address", address, "--num-cpus", "1", "--resources", '{"genqueue_worker":4}'], tmp / "worker.log"
    )
    groups.append(pgid)
    return pgid


def resources_in_use(address: str, tmp: Path) -> dict[str, float]:
    """How much of each placement resource the cluster's actors hold: a worker actor holds one
    `genqueue_worker` (only the worker node has it), each singleton and Serve replica 0.1
    `genqueue_head` (only the head has it)."""
    code = (
        "import ray, json;"
        f"ray.init(address='{address}', logging_level='ERROR', log_to_driver=False);"
        "t, a = ray.cluster_resources(), ray.available_resources();"
        "names = ('genqueue_worker', 'genqueue_head');"
        "print(json.dumps({k: round(t.get(k, 0) - a.get(k, 0), 2) for k in names}))"
    )
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, env=env(tmp), timeout=120)
    used: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return used


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gq-mn-"))
    config = tmp / "genqueue.toml"
    config.write_text(CONFIG.format())
    data, api_port = tmp / "data", free_port()
    figures: dict[str, object] = {}
    with cluster(tmp) as (address, groups):
        worker_pgid = add_worker_node(address, tmp, groups)
        log = tmp / "up.log"
        with log.open("ab") as out:
            up = subprocess.Popen(
                [
                    str(BIN / "genqueue"),
                    "up",
                    "--address",
                    address,
                    "--config",
                    str(config),
                    "--port",
                    str(api_port),
                    "--data-dir",
                    str(data),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env(tmp),
                start_new_session=True,
            )
        groups.append(up.pid)
        eventually(
            lambda: "genqueue ready" in log.read_text() or up.poll() is not None, 180, 0.5, "genqueue up"
        )
        if up.poll() is not None:
            raise SystemExit(f"genqueue up failed: {log.read_text()[-3000:]}")
        used = resources_in_use(address, tmp)
        figures["workers_on_worker_node"] = used["genqueue_worker"]
        figures["head_resource_in_use"] = used["genqueue_head"]
        url = f"http://127.0.0.1:{api_port}"
        with httpx.Client(base_url=url, timeout=60) as client:
            ids = [
                client.post("/v1/tasks", json=payload(i, "photography")).json()["task_id"]
                for i in range(TASKS)
            ]
            eventually(
                lambda: client.get("/v1/queue").json()["succeeded"] >= TASKS // 3, 120, 0.2, "a third done"
            )
            before = client.get("/v1/queue").json()["succeeded"]
            kill_group(worker_pgid)
            killed_at = time.time()
            add_worker_node(address, tmp, groups)
            done = eventually(
                lambda: (q := client.get("/v1/queue").json())["succeeded"] + q["failed"] >= TASKS,
                240,
                0.5,
                "burst done",
            )
            finished_at = time.time()
        redis_url = (data / "redis-url").read_text().strip()
        result = asyncio.run(run_audit(redis_url, "multinode"))
        report = result.report
        after_kill = sorted(
            e.event.at
            for e in asyncio.run(_log(redis_url))
            if isinstance(e.event, TaskSucceeded) and e.event.at > killed_at
        )
        figures.update(
            tasks=len(ids),
            succeeded_before_kill=before,
            succeeded=report.ended.get("succeeded", 0),
            failed=report.ended.get("failed", 0),
            lost=len(report.never_ended),
            ended_twice=len(report.ended_twice),
            violations=result.violations,
            first_success_after_kill_s=round(after_kill[0] - killed_at, 1) if after_kill else None,
            burst_done_after_kill_s=round(finished_at - killed_at, 1),
            queue=done,
        )
        subprocess.run(
            [str(BIN / "genqueue"), "down", "--address", address, "--config", str(config)],
            env=env(tmp),
            capture_output=True,
            timeout=120,
            check=False,
        )
        up.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            up.wait(30)
    print(json.dumps(figures, default=str))
    ok = figures["lost"] == 0 and figures["ended_twice"] == 0 and figures["succeeded"] == TASKS
    sys.exit(0 if ok else 1)


async def _log(url: str) -> list:  # type: ignore[type-arg]
    from events.redis_store import RedisEventStore

    store = RedisEventStore.from_url(url, "multinode")
    try:
        return await store.read_range()
    finally:
        await store.close()


if __name__ == "__main__":
    main()
