"""One burst of simulated users driven three ways at the same genqueue: the Python client, the
TypeScript client under Node, and `genqueue loadtest`; what got in, submit latency, makespan.

    python bench/clients_burst.py [--users 100] [--runs 3] [--json]

One instance serves every run (embedded Valkey, local Ray, Serve direct ingress): tokens and
credits on, 40 slots, the offline provider answering at once with a stock PNG (no latency, no
Pillow render), one pool whose budget never binds (bench/cost_setup.py's `engine_config`), so
that what is measured is genqueue and the client. As `genqueue loadtest` is meant to run, one
service token submits for every simulated user under its own user_id (user-0, user-1, ...),
each granted credits no run spends. User i sends the same task every way: a photography task
with the loadtest's photo and prompt for user i (serve_app/cli/burst.py's `images`, `prompt`).

Each way, every user presses generate at the same instant, times its submit's answer and then
follows its task over Server-Sent Events to its end; retries are off, so every refusal counts:

  python      `genqueue_client.AsyncClient` as its README shows it, on httpx's own connection
              pool (sized to the users), the users released together by an asyncio barrier
  typescript  `GenqueueClient` (clients/typescript/dist) in bench/clients_burst.mjs under `node`,
              the users released together by one promise; its figures come back as a JSON line
  loadtest    `genqueue loadtest`'s `LoadTest.run` in this process (the client over aiohttp's
              connection pool, `serve_app.cli.burst.pooled`)

An untimed loadtest burst warms the instance first. Each round runs the three ways one after
another, the order turned by one each round; after each way the queue is waited on until idle.
The figures are medians over the rounds, per way: submits accepted (202) and tasks succeeded;
submit latency p50 and p99 (the client's clock, from the press to the answer, refusals
included, as `genqueue loadtest` counts them); makespan (the server's clock, from the first
accepted submit to the last task's end, as `genqueue loadtest` counts it); wall (the client's
clock, from the press to the last end seen). Without `node` the typescript way reports so and
the others run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from genqueue_client import AsyncClient, GenqueueError

from bench.common import add_client_nice, lower_priority, print_figures
from bench.cost_setup import Instance, engine_config, instance
from serve_app.cli.burst import images, prompt, user_id
from serve_app.cli.loadreport import UserRun, summarise
from serve_app.cli.loadtest import TIMEOUT, LoadTest

BENCH = Path(__file__).resolve().parent
KIND = "photography"
WAYS = ("python", "typescript", "loadtest")
FIGURES = ("accepted", "succeeded", "submit_p50_ms", "submit_p99_ms", "makespan_s", "wall_s")


def figures_of(runs: list[UserRun]) -> dict[str, Any]:
    """One way's figures from what its users saw, summed up as `genqueue loadtest` does."""
    report = summarise(runs, KIND, 0.0, None)
    ends = [r.seen_end for r in runs if r.seen_end]
    presses = [r.pressed for r in runs if r.pressed]
    return {
        "accepted": report.accepted,
        "succeeded": report.succeeded,
        "submit_p50_ms": report.submit_p50_ms,
        "submit_p99_ms": report.submit_p99_ms,
        "makespan_s": report.makespan_s,
        "wall_s": round(max(ends) - min(presses), 3) if ends and presses else 0.0,
        "rejected": report.rejected,
    }


def reason(exc: Exception) -> str:
    """`<status> <title>` of a refused submit; `no answer: <why>` of one not answered."""
    if isinstance(exc, GenqueueError) and exc.status:
        return f"{exc.status} {exc.title}".strip()
    return f"no answer: {type(exc.__cause__ or exc).__name__}"


async def python_way(url: str, token: str, users: int, deadline: float) -> dict[str, Any]:
    """Every user released by one barrier submits through `AsyncClient` and waits for its task."""
    photos = await asyncio.to_thread(lambda: [images(i, KIND) for i in range(users)])
    runs = [UserRun(i, KIND) for i in range(users)]
    barrier = asyncio.Barrier(users)
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with AsyncClient(url, token, timeout=TIMEOUT, retries=0, limits=limits) as client:
        until = asyncio.get_running_loop().time() + deadline

        async def user(run: UserRun) -> None:
            await barrier.wait()
            run.pressed = time.time()
            t0 = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(until):
                    try:
                        task = await client.submit(
                            KIND, photos[run.index], prompt(run.index), user_id=user_id(run.index)
                        )
                    except (GenqueueError, httpx.HTTPError) as exc:
                        run.reason = reason(exc)
                        if isinstance(exc, GenqueueError) and exc.status:
                            run.status, run.submit_seconds = exc.status, time.perf_counter() - t0
                        return
                    run.submit_seconds, run.status, run.task_id = time.perf_counter() - t0, 202, task.id
                    run.view = dict(task.submitted.raw) if task.submitted else {}
                    with contextlib.suppress(GenqueueError, httpx.HTTPError):
                        run.view = (await task.wait()).raw
                        run.seen_end = time.time()

        await asyncio.gather(*(user(r) for r in runs))
    return figures_of(runs)


async def loadtest_way(url: str, token: str, users: int, deadline: float) -> dict[str, Any]:
    """`genqueue loadtest --users N --kind photography` (all at once, following over SSE)."""
    test = LoadTest(url, users, KIND, 0.0, token, deadline_seconds=deadline)
    await test.run()
    return figures_of(test.runs)


def typescript_way(url: str, token: str, users: int, deadline: float, photos: Path) -> dict[str, Any]:
    """bench/clients_burst.mjs under `node`; its JSON line, or why there is none."""
    node = shutil.which("node")
    if node is None:
        return {"error": "node not found on PATH: the TypeScript client was not run"}
    env = {
        **os.environ,
        "GQBENCH_URL": url,
        "GQBENCH_TOKEN": token,
        "GQBENCH_IMAGES": str(photos),
        "GQBENCH_USERS": str(users),
        "GQBENCH_KIND": KIND,
        "GQBENCH_DEADLINE_S": str(deadline),
    }
    limit = deadline + 60  # Node's start and the photos read come before the burst's deadline
    command = [node, str(BENCH / "clients_burst.mjs")]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"node passed its {limit:.0f} s limit"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        said = done.stderr.strip().splitlines() or ["no output"]
        why = next((line for line in said if "Error" in line), said[-1])  # not Node's version line
        return {"error": f"node exited {done.returncode}: {why.strip()[:200]}"}
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def write_photos(directory: Path, users: int) -> Path:
    """User i's photo as `<i>.png` in `directory`, for the Node script."""
    for i in range(users):
        (directory / f"{i}.png").write_bytes(images(i, KIND)["person"])
    return directory


def drain(inst: Instance, timeout: float) -> None:
    """Wait until nothing waits or runs and every task has ended; stop the run if it does not."""
    if not inst.wait_drained(timeout):
        raise SystemExit(f"the queue was not idle within {timeout:.0f} s: {inst.queue()}")


def one_way(way: str, inst: Instance, token: str, args: argparse.Namespace, photos: Path) -> dict[str, Any]:
    """Run `way` once and wait for the queue to be idle again."""
    url, users, deadline = inst.api_url, args.users, args.deadline
    started = time.monotonic()
    if way == "python":
        figures = asyncio.run(python_way(url, token, users, deadline))
    elif way == "typescript":
        figures = typescript_way(url, token, users, deadline, photos)
    else:
        figures = asyncio.run(loadtest_way(url, token, users, deadline))
    drain(inst, args.deadline)
    if not args.json:
        shown = {k: v for k, v in figures.items() if k != "rejected" or v}
        print(f"  {way:<10} {time.monotonic() - started:5.1f} s  {json.dumps(shown)}", flush=True)
    return figures


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per way: the median of each figure over the rounds that gave figures, every round's
    makespan and submit p99, the refusals of all rounds, and the last error when a round gave none."""
    out: dict[str, Any] = {}
    for way, rounds in results.items():
        good = [r for r in rounds if "error" not in r]
        for key in FIGURES:
            out[f"{way}_{key}"] = statistics.median(r[key] for r in good) if good else None
        out[f"{way}_makespan_s_each"] = [r["makespan_s"] for r in good]
        out[f"{way}_submit_p99_ms_each"] = [r["submit_p99_ms"] for r in good]
        refused: Counter[str] = Counter()
        for r in good:
            refused.update(r.get("rejected", {}))
        out[f"{way}_rejected"] = dict(refused)
        errors = [r["error"] for r in rounds if "error" in r]
        if errors:
            out[f"{way}_error"] = errors[-1]
    return out


def main() -> None:
    """Start genqueue, warm it, run the rounds, print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100, help="simulated users in each burst")
    p.add_argument("--runs", type=int, default=3, help="rounds, each running the three ways in turn")
    p.add_argument(
        "--deadline", type=float, default=300.0, help="seconds one burst, or the wait for idle, may take"
    )
    add_client_nice(p, "the clients (this process, and Node under it)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args()
    started = time.monotonic()
    results: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    orders = []
    with (
        tempfile.TemporaryDirectory(prefix="genqueue-clients-") as tmp,
        instance(engine_config(), dashboard=False) as inst,
    ):
        start_s = time.monotonic() - started
        photos = write_photos(Path(tmp), args.users)
        (service,) = inst.tokens(["bench-service"], role="service")
        inst.tokens([user_id(i) for i in range(args.users)])  # the simulated users' credits
        lower_priority(args.client_nice)
        if not args.json:
            print(f"genqueue up in {start_s:.1f} s at {inst.api_url}; warm-up burst", flush=True)
        asyncio.run(loadtest_way(inst.api_url, service, args.users, args.deadline))
        drain(inst, args.deadline)
        for n in range(args.runs):
            order = WAYS[n % len(WAYS) :] + WAYS[: n % len(WAYS)]
            orders.append(" ".join(order))
            if not args.json:
                print(f"round {n + 1}/{args.runs}", flush=True)
            for way in order:
                results[way].append(one_way(way, inst, service, args, photos))
    figures: dict[str, Any] = {"users": args.users, "rounds": args.runs, "kind": KIND}
    figures.update(summary(results))
    figures["orders"] = orders
    figures["start_s"] = round(start_s, 1)
    figures["seconds"] = round(time.monotonic() - started, 1)
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
