"""The phases of bench/cost.py on the draining instance: the yardsticks, single submits (with CPU
and Valkey commands per task over the whole life), the 1,000-user burst, the batch submit, and
the drain of a queue already in the store."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import free_port
from bench.cost_probe import (
    commands_per_task,
    cpu_delta,
    cpu_sample,
    entries_of,
    per_task_ms,
    span_of,
    valkey_commands,
)
from bench.cost_setup import Instance, fill, fresh_users, submit_body
from bench.cost_wrk import client_run, closed_loop
from bench.cost_yardstick import URL_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
DRAIN_LIMIT = 120.0  # seconds a phase waits for its tasks to end


def wait_serving(url: str, timeout: float = 60.0) -> None:
    """Block until a POST to `url` answers 202."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(url, content=b"{}", timeout=2).status_code == 202:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 202 within {timeout:.0f} s")


@contextlib.contextmanager
def bare_uvicorn(redis_url: str, nice: int) -> Iterator[str]:
    """The yardstick app on bare uvicorn (one process, uvloop and httptools as installed, no
    access log) at the niceness of Ray's workers; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.cost_yardstick:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, URL_VARIABLE: redis_url, "PYTHONPATH": path}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    try:
        wait_serving(f"http://127.0.0.1:{port}/v1/tasks")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def yardsticks(inst: Instance, clients: int, seconds: float, nice: int, tool: str) -> dict[str, Any]:
    """The trivial XADD endpoint on bare uvicorn and on this instance's Serve, same load."""
    from bench import cost_yardstick

    body = submit_body()
    out: dict[str, Any] = {}
    with bare_uvicorn(inst.redis_url, nice) as url:
        out["yardstick_uvicorn"] = closed_loop(
            url, "/v1/tasks", [""], body, clients, seconds, nice, tool
        ).figures()
    cost_yardstick.deploy(inst.redis_url)
    try:
        wait_serving(f"{inst.api_url}{cost_yardstick.SERVE_PREFIX}/v1/tasks")
        path = f"{cost_yardstick.SERVE_PREFIX}/v1/tasks"
        out["yardstick_serve"] = closed_loop(
            inst.api_url, path, [""], body, clients, seconds, nice, tool
        ).figures()
    finally:
        cost_yardstick.undeploy()
    return out


@contextlib.contextmanager
def measured(inst: Instance, out: dict[str, Any], since: str = "") -> Iterator[dict[str, Any]]:
    """CPU per process group and Valkey commands over the block, per task that ended in it;
    the phase's tasks are those submitted after `since` (default: the block's start)."""
    start_id, cpu0, cmd0 = inst.last_id(), cpu_sample(), valkey_commands(inst.redis_url)
    started = time.monotonic()
    yield out
    cpu1, cmd1 = cpu_sample(), valkey_commands(inst.redis_url)
    end_id = inst.last_id()
    span = span_of(entries_of(inst.redis_url, inst.stream, since or start_id, end_id))
    out.update(
        range=[since or start_id, end_id],
        seconds=round(time.monotonic() - started, 2),
        ended=span.ended,
        cpu_ms_per_task=per_task_ms(cpu_delta(cpu0, cpu1), span.ended),
        valkey=commands_per_task(cmd0, cmd1, span.ended),
        load_average=[round(x, 2) for x in os.getloadavg()],
        drain_per_second=span.rate_from_dispatch(),
        last_ended_ms=span.last_ended_ms,
    )


def single_submits(
    inst: Instance, clients: int, seconds: float, nice: int, tool: str, users: int
) -> dict[str, Any]:
    """`clients` keep-alive connections submitting with `users` user tokens while the queue
    drains; then CPU and commands per task over the whole life of the tasks submitted."""
    tokens = inst.tokens(fresh_users("submit", users))
    out: dict[str, Any] = {}
    with measured(inst, out):
        load = closed_loop(inst.api_url, "/v1/tasks", tokens, submit_body(), clients, seconds, nice, tool)
        out.update(load.figures())
        out["drained"] = inst.wait_drained(DRAIN_LIMIT)
    return out


def burst(inst: Instance, users: int, nice: int) -> dict[str, Any]:
    """`users` distinct user tokens, one submit each at the same instant."""
    tokens = inst.tokens(fresh_users("burst", users))
    data = client_run("burst", inst.api_url, tokens, submit_body(), [], nice, 180)
    data["users"] = users
    data["accepted"] = int(data["statuses"].get("202", 0))
    data["drained"] = inst.wait_drained(DRAIN_LIMIT)
    return data


def batch_available(inst: Instance, service: dict[str, str]) -> bool:
    """Whether POST /v1/tasks/batch exists here (a route missing answers 404 or 405)."""
    answer = httpx.post(f"{inst.api_url}/v1/tasks/batch", json={"tasks": []}, headers=service, timeout=30)
    return answer.status_code not in (404, 405)


def accepted_items(answer: Any) -> int:
    """The items of a batch answer that carry a task id, wherever the answer lists them."""
    if isinstance(answer, dict):
        lists = [v for v in answer.values() if isinstance(v, list)]
        return sum(accepted_items(v) for v in lists)
    if isinstance(answer, list):
        return sum(1 for item in answer if isinstance(item, dict) and item.get("task_id"))
    return 0


def batch_submit(inst: Instance, tasks: int, per_request: int = 500) -> dict[str, Any]:
    """`tasks` tasks through POST /v1/tasks/batch with a service token, four requests in flight:
    tasks a second from the first request to the last task's end. Each of the 100 users has a
    selfie of their own, which their items of a request (several styles of it) share."""
    users = fresh_users("batch", 100)
    (token,) = inst.tokens(["bench-service"], role="service")
    inst.tokens(users)  # their balances
    service = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if not batch_available(inst, service):
        return {"available": False}
    items = [json.loads(submit_body(users[i % len(users)], seed=i % len(users))) for i in range(tasks)]
    out: dict[str, Any] = {"available": True, "requested": tasks}
    with measured(inst, out):
        started = time.time()
        accepted, statuses = send_batches(inst.api_url, service, items, per_request)
        out.update(accepted=accepted, statuses=statuses, submit_seconds=round(time.time() - started, 3))
        out["drained"] = inst.wait_drained(DRAIN_LIMIT)
    took = out["last_ended_ms"] / 1000 - started
    out["tasks_per_second"] = round(out["ended"] / took, 1) if took > 0 else 0.0
    return out


def send_batches(
    url: str, headers: dict[str, str], items: list[Any], per_request: int
) -> tuple[int, dict[str, int]]:
    """Post `items` in batches of `per_request`, four at a time; halves the batch on a 413 or
    422 (a smaller cap); returns the accepted items and the statuses."""
    import concurrent.futures

    statuses: dict[str, int] = {}
    accepted = 0
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:

        def post(chunk: list[Any]) -> tuple[int, int]:
            # orjson both ways: a request carries 500 photos, about 10 MB of JSON.
            answer = client.post("/v1/tasks/batch", content=orjson.dumps({"tasks": chunk}))
            ok = answer.status_code < 300
            return answer.status_code, accepted_items(orjson.loads(answer.content)) if ok else 0

        size = per_request
        while True:
            status, got = post(items[:size])
            if status not in (413, 422) or size == 1:
                break
            size //= 2
        statuses[str(status)] = 1
        accepted += got
        chunks = [items[i : i + size] for i in range(size, len(items), size)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for status, got in pool.map(post, chunks):
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                accepted += got
    return accepted, statuses


def drain(inst: Instance, tasks: int) -> dict[str, Any]:
    """`tasks` tasks put in the store while the QueueActor is stopped, then the actor started:
    tasks a second from its first dispatch to the last end, with CPU and commands per task."""
    import ray

    from actors import factory

    config = inst.config
    ray.kill(factory.get(config, factory.QUEUE_NAME), no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            factory.get(config, factory.QUEUE_NAME)
        except ValueError:
            break
        time.sleep(0.1)
    out: dict[str, Any] = {"tasks": tasks}
    before_fill = inst.last_id()
    # Each task's photo in its own folder, as a submit over HTTP leaves it: the worker writes
    # its result there (with one shared photo, each result write also made the folder).
    out["fill_seconds"] = round(fill(inst, tasks, fresh_users("drain", 200), own_inputs=True), 2)
    with measured(inst, out, since=before_fill):
        restarted = time.monotonic()
        factory.start(config)
        out["restart_seconds"] = round(time.monotonic() - restarted, 2)
        out["drained"] = inst.wait_drained(DRAIN_LIMIT)
    return out
