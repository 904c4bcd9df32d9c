"""The benchmark suite's steps as data, and the rows of its results table that each step's
figures make (medians over a step's runs)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Step:
    """One script, its arguments, how often to run it and how long one run may take."""

    name: str
    script: str
    args: list[str]
    runs: int
    timeout: float
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def med(step: Step, key: str | Callable[[dict[str, Any]], float]) -> float | None:
    """The median of one figure over a step's runs (None when no run gave it)."""
    get = key if callable(key) else (lambda r: r[key])
    values = [float(get(r)) for r in step.results]
    return statistics.median(values) if values else None


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    """A figure for the table; n/a when missing."""
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def ratio(classic: float | None, genqueue: float | None) -> str:
    """classic / genqueue, or both figures when genqueue's is zero."""
    if classic is None or genqueue is None:
        return "n/a"
    if genqueue == 0:
        return "∞ (genqueue 0)" if classic else "1 (both 0)"
    return f"{classic / genqueue:.2f}x"


def eta_rows(step: Step | None) -> list[tuple[str, str, str]]:
    """A row per scenario of bench/eta_accuracy.py (none before the step existed)."""
    if step is None or not step.results:
        return []
    r = step.results[-1]
    how = (
        "|predicted - actual wait| / max(actual wait, 1 s) of `eta_seconds` at submit, the wait to the "
        "`task.started` of its call; in brackets the forecast used before the ETA range, replayed on "
        "the same run; p90 covered {} of starts"
    )
    rows = []
    for name in ("default", "burst-600", "slot-bound"):
        if f"{name}_eta_error_median" in r:
            rows.append(
                (
                    f"ETA error at submit, {name}, median / p90",
                    f"{fmt(100 * r[f'{name}_eta_error_median'], ' %')} / "
                    f"{fmt(100 * r[f'{name}_eta_error_p90'], ' %')} "
                    f"({fmt(100 * r[f'{name}_old_model_error_median'], ' %')} / "
                    f"{fmt(100 * r[f'{name}_old_model_error_p90'], ' %')})",
                    how.format(fmt(100 * r[f"{name}_started_by_p90"], " %", 0)),
                )
            )
    return rows


def log_rows(step: Step | None) -> list[tuple[str, str, str]]:
    """The rows of bench/log_life.py (none before the step existed)."""
    if step is None or not step.results:
        return []
    r = step.results[-1]
    return [
        (
            "Redis bytes per finished task, archived",
            f"{fmt(r['task_bytes_per_task_after'], ' bytes', 0)} "
            f"(before: {fmt(r['used_memory_per_task_before'], ' bytes', 0)})",
            f"MEMORY USAGE of every key but the users' after {r['tasks']:,} finished tasks were archived "
            "and forgotten (task_seconds = 60); users keep "
            f"{fmt(r['user_bytes_per_user_after'], ' bytes', 0)} each; used_memory growth "
            f"{fmt(r['used_memory_per_task_after'], ' bytes', 0)} a task",
        ),
        (
            "archive bytes per task",
            fmt(r["archive_bytes_per_task"], " bytes", 0),
            f"zstd segments on disk; {fmt(r['archive_seconds_per_100k_events'], ' s', 1)} of archiving "
            "(write, read back, trim, forget) per 100,000 events",
        ),
    ]


def speed_rows(step: Step | None) -> list[tuple[str, str, str]]:
    """The row of bench/replay_speed.py's audit over a log half archived (none before the step
    existed, or when it archived nothing)."""
    if step is None or not step.results or "archived_end_to_end_events_per_second" not in step.results[-1]:
        return []
    r = step.results[-1]
    return [
        (
            "replay rate, audit, half archived",
            fmt(r["archived_end_to_end_events_per_second"], " events/s", 0),
            f"`genqueue audit` end to end over {r['events']:,} events, the oldest "
            f"{r['archived_events']:,} read from archive segments (hash chain checked), then the "
            f"stream; all live: {fmt(r['end_to_end_events_per_second'], ' events/s', 0)}; reading the "
            f"archive then the stream alone: {fmt(r['archived_read_events_per_second'], ' events/s', 0)}; "
            f"{r['redis_parser']} reply parser; each the median of 3 audits",
        )
    ]


def recovery_rows(step: Step | None) -> list[tuple[str, str, str]]:
    """The row of bench/recovery.py: a QueueActor restart without and with a snapshot (none
    before the step existed)."""
    if step is None or not step.results:
        return []
    r, runs = step.results[-1], len(step.results)
    return [
        (
            f"QueueActor restart, {r['events']:,} events of history: without / with a snapshot",
            f"{fmt(med(step, 'no_snapshot_recovery_seconds'), ' s', 2)} / "
            f"{fmt(med(step, 'snapshot_recovery_seconds'), ' s', 2)}",
            f"the recovery the restarted actor reports, the oldest {r['archived_events']:,} events in the "
            f"archive; without: {r['no_snapshot_replayed']:,} events replayed, archive then stream "
            f"({fmt(med(step, 'no_snapshot_events_per_second'), ' events/s', 0)}); from the kill to the new "
            f"process answering {fmt(med(step, 'no_snapshot_answer_seconds'), ' s', 2)} without, "
            f"{fmt(med(step, 'snapshot_answer_seconds'), ' s', 2)} with; "
            + ("one run" if runs == 1 else f"medians of {runs} runs"),
        )
    ]


def client_rows(step: Step | None) -> list[tuple[str, str, str]]:
    """A row per way of bench/clients_burst.py (none before the step existed)."""
    if step is None or not step.results:
        return []
    r = step.results[-1]
    rows = []
    for way, label in (
        ("python", "Python client"),
        ("typescript", "TypeScript client"),
        ("loadtest", "loadtest"),
    ):
        if r.get(f"{way}_submit_p50_ms") is None:
            rows.append(
                (f"submit latency p50 / p99, {r['users']} users, {label}", "n/a", r.get(f"{way}_error", ""))
            )
            continue
        rows.append(
            (
                f"submit latency p50 / p99, {r['users']} users, {label}",
                f"{fmt(r[f'{way}_submit_p50_ms'], ' ms', 0)} / {fmt(r[f'{way}_submit_p99_ms'], ' ms', 0)}",
                f"makespan {fmt(r[f'{way}_makespan_s'], ' s', 2)}; {fmt(r[f'{way}_accepted'], '', 0)} "
                f"accepted, {fmt(r[f'{way}_succeeded'], '', 0)} succeeded; one service token submits for "
                f"every user at once, each follows its task over SSE; medians of {r['rounds']} rounds "
                "alternating the three clients on one instance, offline provider with no latency",
            )
        )
    return rows


def slow_rows(step: Step | None) -> list[tuple[str, str, str]]:
    """The row for submits made while slow uploads are open (none before the step existed)."""
    if step is None:
        return []
    return [
        (
            f"submit latency p99, {step.args[1]} slow uploads open",
            f"{fmt(med(step, 'with_slow_p99_ms'), ' ms', 0)} "
            f"(alone: {fmt(med(step, 'quiet_p99_ms'), ' ms', 0)})",
            f"{step.args[3]} valid submits one after another while uploads that sent their headers "
            "and stalled stay open, half with no token and half with a valid one; then the same "
            "submits with none open",
        )
    ]


def deadline_rows(step: Step | None) -> list[tuple[str, str, str]]:
    """The rows of burst-600 with deadlines on half its tasks (none before the step existed)."""
    if step is None or not step.results:
        return []
    runs = [r["deadlines"] for r in step.results if "deadlines" in r]
    if not runs:
        return []

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    return [
        (
            "deadlines, burst-600: expired / with a call / refunded exactly",
            f"{median('expired'):.0f} of {median('deadline_tasks'):.0f} / "
            f"{max(r['expired_with_a_call'] for r in runs)} / "
            f"{min(r['expired_refunded_exactly'] == r['expired'] for r in runs)}",
            "half of 600 tasks must start within 10 s (google-genai, emulator); an expired task has no "
            "task.started and its refund equals its charge; most calls any expired task made, over "
            f"{len(runs)} runs",
        ),
        (
            "deadlines, burst-600: started after the deadline / efficiency of the tasks that ran",
            f"{max(r['started_after_deadline'] for r in runs)} / {fmt(median('ran_efficiency'), '', 3)}",
            "calls of deadline tasks that started at or after their deadline (most over the runs); the "
            "ran tasks' bound (their count over the pools' rate, plus a call) over their makespan",
        ),
    ]


def flood_rows(step: Step | None) -> list[tuple[str, str, str]]:
    """The rows of the priority lanes' flood (none before the step existed)."""
    if step is None or not step.results:
        return []
    runs = step.results

    def median(lane: str, key: str) -> float:
        return statistics.median(float(r[lane][key]) for r in runs)

    paid = step.args[step.args.index("--paid") + 1]
    rows = []
    # Before the mixed flood existed, "paid_in_flood" was the free-first one.
    mixed = "paid_in_flood_free_first" in runs[0]
    shapes = (("", False), ("_free_first", True)) if mixed else (("", True),)
    paced = "paid_alone_paced" in runs[0]
    for name, free_first in shapes:
        how = "all submitted first" if free_first else "mixed in one burst, one paid in 11"
        # The mixed flood's yardstick: the paid tasks alone, each pressed when it was in the flood.
        yardstick = "paid_alone_paced" if paced and not free_first else "paid_alone"
        if yardstick == "paid_alone_paced":
            how += ", alone pressed at their flood times"
        alone = fmt(median(yardstick, "p90_s"), " s", 2)
        flood = fmt(median(f"paid_in_flood{name}", "p90_s"), " s", 2)
        ratio_ = fmt(statistics.median(float(r[f"paid_p90_ratio{name}"]) for r in runs), "", 2)
        free50 = fmt(median(f"free_in_flood{name}", "p50_s"), " s", 1)
        free_max = fmt(median(f"free_in_flood{name}", "max_s"), " s", 1)
        label = "a 10:1 flood" + (", free first" if free_first else "")
        rows += [
            (
                f"lanes, {label}: paid p90 wait alone / in the flood (ratio)",
                f"{alone} / {flood} ({ratio_})",
                f"{paid} paid tasks alone, then with {int(paid) * 10} free ones, {how} (paid weight 9, "
                f"reserved 0.2; google-genai, emulator); medians of {len(runs)} runs",
            ),
        ]
        if "paid_from_press_alone" in runs[0]:  # from when each user pressed (later versions)
            pressed = fmt(median("paid_from_press_alone", "p90_s"), " s", 2)
            flooded = fmt(median(f"paid_from_press_in_flood{name}", "p90_s"), " s", 2)
            ratios = (float(r[f"paid_from_press_p90_ratio{name}"]) for r in runs)
            rows.append(
                (
                    f"lanes, {label}: paid p90 from pressing, alone / in the flood (ratio)",
                    f"{pressed} / {flooded} ({fmt(statistics.median(ratios), '', 2)})",
                    "the time to get through the door counted; the same paid tasks pressed at once alone",
                )
            )
        rows += [
            (
                f"lanes, {label}: free p50 / longest wait",
                f"{free50} / {free_max}",
                "the free tasks of the flood: they progress while paid ones wait (no starvation)",
            ),
        ]
    return [
        *rows,
        (
            "lanes, the floods: upstream 429s",
            str(max(int(r.get("upstream_429s", 0)) for r in runs)),
            "the most in any run, all its bursts together",
        ),
    ]
