"""`make bench`: run every benchmark, each in its own process with a time limit, and write
bench/results.md.

Each script prints its own figures (run it alone to see them); here each runs with --json,
several times where a run is short, and the table gives medians:

  capacity         bench/burst.py: tasks per second end to end through HTTP, offline provider
                   with no latency and no render, a pool whose budget never binds; also dispatch latency and
                   submit latency at 1,000 simultaneous clients
  submit-200       bench/burst.py with 200 simultaneous clients, same instance set-up
  slow-uploads     bench/slow_uploads.py: submit latency while 100 stalled uploads are open
  memory           bench/memory.py: QueueActor RSS growth per 100,000 waiting tasks
  replay           bench/replay.py: a stream of 1,000,000 events folded and audited
  replay-speed     bench/replay_speed.py: the same size of log read, decoded and audited, each stage
                   timed alone and `genqueue audit` end to end, all live and half archived
  recovery         bench/recovery.py: a QueueActor restart over 1,000,000 events of history, half
                   archived, without a snapshot and with one
  log-life         bench/log_life.py: 100,000 finished tasks archived and forgotten with
                   task_seconds = 60: Redis bytes left per task, archive bytes per task
  burst-60/600     bench/burst.py --provider gemini against the emulator, and
                   bench/baseline.py (the classic cloud-function design) on the same set-up
  cost             bench/cost.py: the cost of one task, every target of issue 16 beside its
                   yardsticks (a trivial XADD endpoint on bare uvicorn and on Serve), once
  eta-accuracy     bench/eta_accuracy.py: each task's ETA at submit against the start of its
                   call, in the default 100-user burst, burst-600 and a slot-bound burst, once
  clients-burst    bench/clients_burst.py: one 100-user burst through the Python client, the
                   TypeScript client (Node) and `genqueue loadtest` in turn on one instance, --runs
                   rounds in one run: accepted, succeeded, submit p50 / p99, makespan

    python bench/suite.py [--runs 3] [--quick] [--out bench/results.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.suite_rows import (  # noqa: E402
    Step,
    client_rows,
    deadline_rows,
    eta_rows,
    flood_rows,
    fmt,
    log_rows,
    med,
    ratio,
    recovery_rows,
    slow_rows,
    speed_rows,
)

# Time-scaled scenarios: the 60-user burst at 10x (3 projects x 15 calls per 6 s window, 40 slots,
# 2 s calls) and the 600-user burst as in bench/RESULTS.md (3 x 600 RPM over 1 s windows).
BURST_60 = [
    "--users",
    "60",
    "--slots",
    "40",
    "--pools",
    "3x150",
    "--window",
    "6",
    "--latency",
    "2",
    "--jitter",
    "0.1",
]
BURST_600 = ["--users", "600", "--slots", "20", "--pools", "3x600", "--window", "1", "--latency", "0.5"]
GEMINI = ["--provider", "gemini", "--image-size", "512", "--kind", "photography"]
# 1,000 waiting tasks and --finished tasks of four events each, half the log archived.
RECOVERY = ["--waiting", "1000", "--archived", "0.5", "--audit-events", "0"]
# No latency, and one pool whose window holds every task of the run: only the scheduler binds.
CAPACITY = ["--slots", "40", "--latency", "0", "--pools", "1x5000", "--window", "60", "--image-size", "512"]


def run(step: Step) -> None:
    """Run the step's script `runs` times; keep each run's JSON figures or why it failed."""
    for i in range(step.runs):
        command = [sys.executable, str(BENCH / step.script), *step.args, "--json"]
        started = time.monotonic()
        print(f"[{dt.datetime.now():%H:%M:%S}] {step.name} run {i + 1}/{step.runs}", flush=True)
        try:
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=step.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            step.errors.append(f"run {i + 1} passed its {step.timeout:.0f} s limit")
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            step.errors.append(f"run {i + 1} exited {done.returncode}: {tail}")
            continue
        figures = json.loads(lines[-1])
        step.results.append(figures)
        print(f"    {time.monotonic() - started:.0f} s: {json.dumps(figures)[:400]}", flush=True)


def steps(runs: int, quick: bool) -> list[Step]:
    """The benchmark plan; --quick shrinks every load for a smoke test of the suite itself."""
    users, submits, waiting, events = (
        ("200", "50", "20000", "40000") if quick else ("1000", "200", "100000", "1000000")
    )
    return [
        Step("capacity", "burst.py", ["--users", users, *CAPACITY], runs, 600),
        Step("submit-200", "burst.py", ["--users", submits, *CAPACITY], runs, 300),
        Step("slow-uploads", "slow_uploads.py", ["--slow", "100", "--submits", submits], runs, 300),
        Step("memory", "memory.py", ["--waiting", waiting, "--rounds", "3"], 1, 900),
        Step("replay", "replay.py", ["--events", events], 1, 1500),
        Step("replay-speed", "replay_speed.py", ["--events", events], 1, 900),
        Step("recovery", "recovery.py", [*RECOVERY, "--finished", "9750" if quick else "249750"], 1, 1200),
        Step("log-life", "log_life.py", ["--tasks", "10000" if quick else "100000"], 1, 1200),
        Step("burst-60", "burst.py", [*BURST_60, *GEMINI], runs, 300),
        Step("burst-60 classic", "baseline.py", BURST_60, runs, 300),
        Step("burst-600", "burst.py", [*BURST_600, *GEMINI], runs, 400),
        Step("burst-600 classic", "baseline.py", BURST_600, runs, 400),
        Step("burst-600 deadlines", "burst.py", [*BURST_600, *GEMINI, "--deadline", "10"], runs, 400),
        # 60 paid tasks alone, then behind 600 free ones: two bursts on one instance.
        Step("flood", "flood.py", ["--provider", "gemini", "--paid", "20" if quick else "60"], runs, 600),
        # Ten minutes or so at full size; its phases are bounded, so 20 is a hang.
        Step("cost", "cost.py", ["--quick"] if quick else [], 1, 1200),
        # About five minutes: the default burst waits two 60 s windows.
        Step("eta-accuracy", "eta_accuracy.py", ["--scale", "10"] if quick else [], 1, 900),
        # One instance for every round; the rounds are the script's own (medians inside).
        Step("clients-burst", "clients_burst.py", ["--users", "100", "--runs", str(runs)], 1, 600),
    ]


def refused(step: Step) -> str:
    """The submits refused in each run, by status, when any were."""
    runs = [r.get("rejected", {}) for r in step.results]
    if not any(runs):
        return ""
    each = [", ".join(f"{n} x {status}" for status, n in r.items()) or "none" for r in runs]
    return f"; submits refused per run: {'; '.join(each)}"


def ideal_over_measured(step: Step) -> str:
    """The two makespans behind an efficiency."""
    ideal, measured = fmt(med(step, "ideal_s"), " s", 2), fmt(med(step, "makespan_s"), " s", 2)
    return f"ideal makespan {ideal} / measured {measured}"


def table(by: dict[str, Step]) -> list[str]:
    """The figures table."""
    cap, sub, mem, rep = by["capacity"], by["submit-200"], by["memory"], by["replay"]
    b60, b600 = by["burst-60"], by["burst-600"]
    users = cap.args[1]
    rows = [
        (
            "scheduler capacity",
            fmt(med(cap, "tasks_per_second"), " tasks/s"),
            f"{users} tasks submitted at once through HTTP, offline provider with no latency "
            "answering a stock PNG (no Pillow render on the same cores), a budget that never "
            "binds. The submits bound it: the last was answered after "
            f"{fmt(med(cap, 'submit_span_s'), ' s')} and the last task ended "
            f"{fmt(med(cap, lambda r: r['makespan_s'] - r['submit_span_s']), ' s', 2)} later" + refused(cap),
        ),
        (
            "dispatch latency p50 / p99",
            f"{fmt(med(cap, 'dispatch_latency_p50_ms'), ' ms', 0)} / "
            f"{fmt(med(cap, 'dispatch_latency_p99_ms'), ' ms', 0)}",
            "an outcome event to the next dispatch event, from stream ids, in the capacity runs",
        ),
        (
            f"submit latency p50 / p99, {sub.args[1]} clients",
            f"{fmt(med(sub, 'submit_p50_ms'), ' ms', 0)} / {fmt(med(sub, 'submit_p99_ms'), ' ms', 0)}",
            "every client submits at the same instant, same set-up" + refused(sub),
        ),
        (
            f"submit latency p50 / p99, {users} clients",
            f"{fmt(med(cap, 'submit_p50_ms'), ' ms', 0)} / {fmt(med(cap, 'submit_p99_ms'), ' ms', 0)}",
            "the capacity runs",
        ),
        *slow_rows(by.get("slow-uploads")),
        *eta_rows(by.get("eta-accuracy")),
        *log_rows(by.get("log-life")),
        *client_rows(by.get("clients-burst")),
        *deadline_rows(by.get("burst-600 deadlines")),
        *flood_rows(by.get("flood")),
        (
            "memory per waiting task",
            f"{fmt(med(mem, 'mb_per_100k_waiting'), ' MB')} per 100,000",
            f"QueueActor RSS growth, median of 3 rounds of {int(mem.args[1]):,} waiting tasks"
            f" ({fmt(med(mem, 'bytes_per_waiting_task'), ' bytes', 0)} each)",
        ),
        (
            "replay rate, queue fold",
            fmt(med(rep, "fold_events_per_second"), " events/s", 0),
            f"{fmt(med(rep, 'fold_events'), '', 0)} events read in pages and applied to the queue state "
            "(a QueueActor restart without a snapshot)",
        ),
        (
            "replay rate, audit",
            fmt(med(rep, "audit_events_per_second"), " events/s", 0),
            "the same stream through `genqueue audit`'s decoder and invariant checks",
        ),
        *speed_rows(by.get("replay-speed")),
        *recovery_rows(by.get("recovery")),
        (
            "efficiency, burst-60 (emulator)",
            fmt(med(b60, "efficiency_vs_ideal"), "", 3),
            ideal_over_measured(b60),
        ),
        (
            "efficiency, burst-600 (emulator)",
            fmt(med(b600, "efficiency_vs_ideal"), "", 3),
            ideal_over_measured(b600),
        ),
    ]
    lines = ["| figure | median | how |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def classic_table(by: dict[str, Step]) -> list[str]:
    """genqueue and the classic design side by side."""
    lines = [
        "| scenario | design | makespan | failed tasks | 429s from upstream |",
        "|---|---|---|---|---|",
    ]
    for name in ("burst-60", "burst-600"):
        g, c = by[name], by[f"{name} classic"]
        for label, step in (("genqueue", g), ("classic", c)):
            lines.append(
                f"| {name} | {label} | {fmt(med(step, 'makespan_s'), ' s', 2)} | "
                f"{fmt(med(step, 'failed'), '', 0)} | {fmt(med(step, 'upstream_429s'), '', 0)} |"
            )
        lines.append(
            f"| {name} | classic / genqueue | {ratio(med(c, 'makespan_s'), med(g, 'makespan_s'))} | "
            f"{ratio(med(c, 'failed'), med(g, 'failed'))} | "
            f"{ratio(med(c, 'upstream_429s'), med(g, 'upstream_429s'))} |"
        )
    return lines


def save(out: Path, by: dict[str, Step], runs: int, seconds: float) -> dict[str, Any]:
    """Every run's figures as JSON next to the results (`--render` rewrites the page from it)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    record = {
        "written": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "commit": commit or "?",
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "minutes": round(seconds / 60, 1),
        "runs": runs,
        "steps": {
            s.name: {"script": s.script, "args": s.args, "results": s.results, "errors": s.errors}
            for s in by.values()
        },
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def load(out: Path) -> tuple[dict[str, Step], dict[str, Any]]:
    """The steps and metadata `save` wrote."""
    record = json.loads(out.with_suffix(".json").read_text())
    by = {
        name: Step(name, s["script"], s["args"], len(s["results"]), 0, s["results"], s["errors"])
        for name, s in record["steps"].items()
    }
    return by, record


def cost_section(step: Step | None) -> list[str]:
    """bench/cost.py's own table, from its last run (nothing when the step did not run)."""
    if step is None or not step.results:
        return []
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.cost_report import table as cost_table

    return [
        "## The cost of one task (`bench/cost.py`)",
        "",
        "Every target of issue 16 in one run, beside its yardsticks: a trivial FastAPI endpoint "
        "doing one XADD to the same Valkey on bare uvicorn and on the same Serve instance. Run "
        "`bench/cost.py` alone for the table, `--json` for every figure.",
        "",
        *cost_table(step.results[-1]),
        "",
    ]


def write(out: Path, by: dict[str, Step], record: dict[str, Any]) -> None:
    """bench/results.md."""
    text = [
        "# Benchmark results (`make bench`)",
        "",
        f"Written by `bench/suite.py` on {record['written']}, commit {record['commit']}, "
        f"{record['cpus']} CPUs, {record['memory_gb']} GB; the whole suite took {record['minutes']} min. "
        f"Medians of {record['runs']} runs unless a row says otherwise; each run starts its own "
        "genqueue (embedded Valkey, local Ray, Serve direct ingress). Earlier, hand-run figures and "
        "what they taught are in `bench/RESULTS.md`; every run's figures are in `bench/results.json`.",
        "",
        *table(by),
        "",
        "Efficiency is the ideal makespan over the measured one. The ideal is the planner's schedule "
        "(`actors/planner.py`) without the key pool's margin: FIFO under the slots and the rolling "
        "windows, where a burst may take a whole window's budget at once, nothing else in the way. "
        "burst-60: 60 users, 3 projects x 15 calls per 6 s window, 40 slots, 2 s calls (the 60 s, "
        "20 s story at 10x speed); burst-600: 600 users, 3 x 600 RPM over 1 s windows, 20 slots, "
        "0.5 s calls; both through the google-genai client to a `genqueue emulator` process.",
        "",
        "## Against the classic cloud-function design",
        "",
        "`bench/baseline.py` on the same emulator set-up: a manager wakes every 30 s (scaled like "
        "the window: 3 s for burst-60, 0.5 s for burst-600; first wake-up at the burst), starts up "
        "to slots - running tasks with a key picked at random, and fails a task on a 429.",
        "",
        *classic_table(by),
        "",
        "A classic makespan shorter than genqueue's is no win: it ends early because the tasks "
        "that met a 429 failed instead of waiting for the budget.",
        "",
        *cost_section(by.get("cost")),
    ]
    errors = [f"- {s.name}: {e}" for s in by.values() for e in s.errors]
    if errors:
        text += ["## Runs that gave no figures", "", *errors, ""]
    out.write_text("\n".join(text) + "\n")


def main() -> None:
    """Run the plan and write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs of each short benchmark")
    p.add_argument("--quick", action="store_true", help="small loads, to check that the suite works")
    p.add_argument("--out", type=Path, default=BENCH / "results.md")
    p.add_argument("--only", nargs="*", help="run only these steps (by name)")
    p.add_argument("--render", action="store_true", help="rewrite the page from the saved figures")
    args = p.parse_args()
    if args.render:
        by, record = load(args.out)
    else:
        started = time.monotonic()
        plan = steps(args.runs, args.quick)
        for step in plan:
            if not args.only or step.name in args.only:
                run(step)
        by = {s.name: s for s in plan}
        record = save(args.out, by, args.runs, time.monotonic() - started)
    write(args.out, by, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
