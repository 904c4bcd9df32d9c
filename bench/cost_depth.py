"""The phases of bench/cost.py on instances of their own: submit cost against queue depth (one
slot held for the whole run, so that every task waits), and a burst-600 with and without 1,000
open task streams."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import httpx

from bench.cost_probe import commands_per_task, cpu_delta, cpu_sample, entries_of, span_of, valkey_commands
from bench.cost_setup import Instance, fill, fresh_users, submit_body
from bench.cost_wrk import client_run


def wait_running(inst: Instance, count: int, timeout: float = 60.0) -> None:
    """Block until `count` tasks run."""
    deadline = time.monotonic() + timeout
    while inst.queue()["running"] < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} task(s) did not start within {timeout:.0f} s")
        time.sleep(0.1)


def probe(inst: Instance, tokens: list[str]) -> dict[str, Any]:
    """One submit after another, each by a user of its own (so each lands behind every waiting
    task): latency, position, and CPU and Valkey commands per submit."""
    body = submit_body()
    latencies: list[float] = []
    positions: list[int] = []
    cpu0, cmd0 = cpu_sample(), valkey_commands(inst.redis_url)
    with httpx.Client(base_url=inst.api_url, timeout=60) as client:
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            t0 = time.perf_counter()
            answer = client.post("/v1/tasks", content=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            if answer.status_code == 202:
                positions.append(int(answer.json().get("position") or 0))
    cpu = cpu_delta(cpu0, cpu_sample())
    commands = commands_per_task(cmd0, valkey_commands(inst.redis_url), len(tokens))
    return {
        "submits": len(tokens),
        "accepted": len(positions),
        "position_median": int(statistics.median(positions)) if positions else None,
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "mean_ms": round(1000 * statistics.fmean(latencies), 2),
        "cpu_ms_per_submit": {g: round(1000 * s / len(tokens), 3) for g, s in cpu.items()},
        "valkey": commands,
    }


def depth(inst: Instance, shallow: int, deep: int, probes: int) -> dict[str, Any]:
    """Submit p50 with `shallow` tasks waiting and with `deep` waiting, and their ratio."""
    fill(inst, 1)  # takes the one slot for the run
    wait_running(inst, 1)
    tokens = inst.tokens(fresh_users("probe", 2 * probes + 3))
    probe(inst, tokens[-3:])  # the replica's first requests open its connections
    waiting = inst.queue()["waiting"]
    if waiting < shallow:
        fill(inst, shallow - waiting)
    low = probe(inst, tokens[:probes])
    waiting = inst.queue()["waiting"]
    filled = fill(inst, max(0, deep - waiting))
    high = probe(inst, tokens[probes : 2 * probes])
    return {
        "shallow": low,
        "deep": high,
        "fill_seconds": round(filled, 1),
        "p50_ratio": round(high["p50_ms"] / low["p50_ms"], 2) if low["p50_ms"] else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def burst_with_watchers(inst: Instance, tokens: list[str], watchers: int, nice: int) -> dict[str, Any]:
    """One submit per token at once; `watchers` streams opened as the submits are answered;
    the makespan from the first submit to the last task's end, and CPU over the run."""
    extra = ["--watchers", str(watchers), "--deadline", "240"]
    start_id, cpu0 = inst.last_id(), cpu_sample()
    data = client_run("watch", inst.api_url, tokens, submit_body(), extra, nice, 300)
    drained = inst.wait_drained(240)
    cpu = cpu_delta(cpu0, cpu_sample())
    span = span_of(entries_of(inst.redis_url, inst.stream, start_id, inst.last_id()))
    started = float(data["started"])
    return {
        **data,
        "drained": drained,
        "ended": span.ended,
        "makespan_s": round(span.last_ended_ms / 1000 - started, 3) if span.last_ended_ms else None,
        "cpu_s": {g: round(s, 2) for g, s in cpu.items()},
    }


def watchers_phase(inst: Instance, users: int, watchers: int, nice: int) -> dict[str, Any]:
    """burst-600 with no task streams open, then with `watchers` open; the makespans' ratio."""
    tokens = inst.tokens(fresh_users("sse", users))
    none = burst_with_watchers(inst, tokens, 0, nice)
    # A pause of two windows, so that the second burst finds every pool's window empty as
    # the first did.
    time.sleep(2 * inst.config.pools[0].window_seconds)
    many = burst_with_watchers(inst, tokens, watchers, nice)
    a, b = none["makespan_s"], many["makespan_s"]
    return {"none": none, "watched": many, "makespan_ratio": round(b / a, 3) if a and b else None}
