"""The cost of one task: every target of issue 16 measured in one run, beside its yardsticks.

Three genqueue instances in turn, each as `genqueue up` runs one (embedded Valkey, a local
Ray with its dashboard, Serve direct ingress behind HAProxy), tokens required, credits
charged and submit rates counted (rates set too high to bind):

  engine   offline provider answering at once, 40 slots, a budget that never binds:
           yardstick  a trivial FastAPI endpoint doing one XADD to the same Valkey, on bare
                      uvicorn and as a second app on the same Serve (same direct ingress and
                      HAProxy), under the same load as the submits
           submit     200 keep-alive clients submitting with user tokens while the queue
                      drains; CPU per task by process group and Valkey commands and round trips
                      per task over the whole life of those tasks
           burst      1,000 user tokens, one submit each at the same instant
           batch      POST /v1/tasks/batch with a service token, end to end
           drain      tasks put in the store with the QueueActor stopped, then started:
                      drain rate, engine CPU per task, and dispatch latency while draining
  depth    one slot held for the run: submit p50 at position ~10 and ~10,000, with CPU and
           Valkey commands per submit (the submit's share of a task's commands)
  sse      burst-600 (600 users, 20 slots, 3 pools of 600 a second, 0.5 s calls) with no
           task streams open, then with 1,000 open

Load comes from `wrk` with a Lua script (install: `sudo apt-get install -y wrk`) or, without
it, from an aiohttp client in a process of its own; bursts and streams from that client. The
clients run at the niceness of Ray's workers (15), so that they do not take the CPU first.

    python bench/cost.py [--quick] [--only submit,burst,...] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cost_depth, cost_engine
from bench.common import add_client_nice, print_figures
from bench.cost_probe import dispatch_latencies
from bench.cost_report import table
from bench.cost_setup import Instance, burst600_config, depth_config, engine_config, instance
from bench.cost_wrk import WRK_MISSING

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("yardstick", "submit", "burst", "batch", "drain", "depth", "sse")
# Names a reader may think of, and the phases that measure them.
ALIASES = {
    "yardsticks": ("yardstick",),
    "cpu": ("submit",),
    "commands": ("submit", "depth"),
    "dispatch": ("drain",),
    "watchers": ("sse",),
}


def selected(only: str) -> list[str]:
    """The phases `--only` names (every phase when empty), in running order."""
    if not only:
        return list(PHASES)
    wanted: set[str] = set()
    for name in (n.strip() for n in only.split(",") if n.strip()):
        if name not in PHASES and name not in ALIASES:
            raise SystemExit(f"--only: no phase {name!r}; phases: {', '.join(PHASES)}, {', '.join(ALIASES)}")
        wanted.update(ALIASES.get(name, (name,)))
    return [p for p in PHASES if p in wanted]


def tree() -> dict[str, Any]:
    """The commit measured, and the files changed in the working tree."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = [line for line in git("status", "--short").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD") or "?", "changed_files": len(changed), "changes": changed}


def load_tool(choice: str) -> str:
    """What makes the closed-loop load, as the table states it."""
    if choice != "python" and shutil.which("wrk"):
        return "wrk (Lua script, 2 threads)"
    missing = "" if choice == "python" else "; wrk not installed: `sudo apt-get install -y wrk`"
    return f"aiohttp in a process of its own{missing}"


def guarded(figures: dict[str, Any], name: str, run: Callable[[], Any]) -> None:
    """Run one phase and keep its figures; a phase that fails leaves its error and the run goes on."""
    started = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
    try:
        figures[name] = run()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        figures[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    figures.setdefault("phase_seconds", {})[name] = round(time.monotonic() - started, 1)


def engine_phases(args: argparse.Namespace, phases: list[str], figures: dict[str, Any]) -> None:
    """The phases on the draining instance."""
    q = args.quick
    seconds = args.seconds or (5.0 if q else 15.0)
    with instance(engine_config(), args.dashboard) as inst:
        if "yardstick" in phases:
            guarded(
                figures,
                "yardstick",
                lambda: cost_engine.yardsticks(inst, args.clients, seconds, args.client_nice, args.tool),
            )
        if "submit" in phases:
            users = 200 if q else 1000
            guarded(
                figures,
                "submit",
                lambda: cost_engine.single_submits(
                    inst, args.clients, seconds, args.client_nice, args.tool, users
                ),
            )
        if "burst" in phases:
            guarded(figures, "burst", lambda: cost_engine.burst(inst, 300 if q else 1000, args.client_nice))
        if "batch" in phases:
            guarded(figures, "batch", lambda: cost_engine.batch_submit(inst, 1000 if q else 4000))
        if "drain" in phases:
            guarded(figures, "drain", lambda: cost_engine.drain(inst, 500 if q else 3000))
        guarded(figures, "dispatch", lambda: dispatch_figures(inst, figures))


def dispatch_figures(inst: Instance, figures: dict[str, Any]) -> dict[str, Any]:
    """Dispatch latency in the draining phases that ran."""
    ranges = {
        name: (figures[name]["range"][0], figures[name]["range"][1])
        for name in ("drain", "submit", "batch")
        if "range" in figures.get(name, {})
    }
    return dispatch_latencies(inst.redis_url, inst.config.redis.namespace, ranges) if ranges else {}


def main() -> None:
    """Parse arguments, run the phases, print the table (or the JSON figures)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller loads and shorter phases")
    p.add_argument("--only", default="", help=f"comma-separated phases: {', '.join(PHASES)}")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    p.add_argument("--clients", type=int, default=200, help="keep-alive clients of the closed-loop load")
    p.add_argument("--seconds", type=float, default=0.0, help="length of a closed-loop run (15; quick 5)")
    p.add_argument("--tool", default="auto", choices=["auto", "wrk", "python"], help="closed-loop load")
    add_client_nice(p)
    p.add_argument("--label", default="", help="a note on the code measured, shown above the table")
    p.add_argument(
        "--no-dashboard", dest="dashboard", action="store_false", help="start Ray without its dashboard"
    )
    args = p.parse_args()
    phases = selected(args.only)
    started = time.monotonic()
    figures: dict[str, Any] = {
        **tree(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "load_tool": load_tool(args.tool),
        "clients": args.clients,
        "label": args.label,
    }
    if args.tool != "python" and not shutil.which("wrk"):
        print(WRK_MISSING, file=sys.stderr)
    if set(phases) & {"yardstick", "submit", "burst", "batch", "drain"}:
        engine_phases(args, phases, figures)
    if "depth" in phases:
        with instance(depth_config(), args.dashboard) as inst:
            shallow, deep, probes = (10, 2000, 20) if args.quick else (10, 10_000, 100)
            guarded(figures, "depth", lambda: cost_depth.depth(inst, shallow, deep, probes))
    if "sse" in phases:
        with instance(burst600_config(), args.dashboard) as inst:
            users, watchers = (200, 300) if args.quick else (600, 1000)
            guarded(
                figures, "sse", lambda: cost_depth.watchers_phase(inst, users, watchers, args.client_nice)
            )
    figures["minutes"] = round((time.monotonic() - started) / 60, 1)
    if args.json:
        print_figures(figures, as_json=True)
    else:
        print("\n".join(table(figures)))


if __name__ == "__main__":
    main()
