"""The table of bench/cost.py: each figure of issue 16 beside its target and its yardsticks.

Pure formatting of the figures `bench/cost.py --json` prints, so that `bench/suite.py` renders
the same table from its saved results."""

from __future__ import annotations

from typing import Any

GROUP_LABELS = {
    "ingress": "ingress replica(s)",
    "queue": "QueueActor",
    "keypool": "KeyPoolActor",
    "workers": "workers",
    "janitor": "blob janitor",
    "serve": "Serve controller and proxies",
    "ray": "Ray's own (raylet, gcs, dashboard, agents)",
    "valkey": "Valkey",
    "haproxy": "HAProxy",
}


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    """A number with thousands separators, or n/a."""
    if value is None or isinstance(value, str):
        return "n/a"
    return f"{float(value):,.{digits}f}{unit}"


def _failed(phase: Any) -> str | None:
    """Why a phase gave no figures: not run, or its error."""
    if not isinstance(phase, dict):
        return "not run"
    error = phase.get("error")
    return f"failed: {error}" if error else None


def _closed(load: dict[str, Any]) -> str:
    """Rate and latencies of a closed-loop run, with what was not a 202."""
    others = {k: v for k, v in load.get("statuses", {}).items() if k != "202"}
    refused = ", ".join(f"{v} x {k}" for k, v in others.items())
    errors = load.get("errors", 0)
    tail = "; ".join(x for x in (refused and f"not 202: {refused}", errors and f"{errors} errors") if x)
    p50, p99 = _num(load.get("p50_ms"), 0), _num(load.get("p99_ms"), 0)
    text = f"{_num(load.get('per_second'))}/s, p50 {p50} ms, p99 {p99} ms"
    return f"{text} ({tail})" if tail else text


def _valkey(valkey: dict[str, Any]) -> str:
    """Commands and round trips per task."""
    return f"{_num(valkey['commands_per_task'])} commands, {_num(valkey['round_trips_per_task'])} round trips"


def _yardstick_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    phase = figures.get("yardstick")
    why = _failed(phase)
    if why:
        return [("yardsticks: trivial XADD endpoint", why, "")]
    assert isinstance(phase, dict)
    return [
        ("yardstick: trivial XADD endpoint, bare uvicorn", _closed(phase["yardstick_uvicorn"]), "yardstick"),
        (
            "yardstick: the same endpoint on Serve (direct ingress + HAProxy)",
            _closed(phase["yardstick_serve"]),
            "yardstick",
        ),
    ]


def _submit_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    phase = figures.get("submit")
    label = f"single submits, {figures.get('clients', 200)} keep-alive clients, draining"
    why = _failed(phase)
    if why:
        return [(label, why, "≥ 500/s, p99 < 500 ms")]
    assert isinstance(phase, dict)
    rows = [(label, _closed(phase), "≥ 500/s, p99 < 500 ms")]
    cpu = phase["cpu_ms_per_task"]
    rows.append(
        (
            f"CPU per task, end to end ({phase['ended']:,} tasks: submit over HTTP to success)",
            f"{_num(cpu['total'], 2)} ms",
            "≤ 3 ms",
        )
    )
    for group, label_text in GROUP_LABELS.items():
        if cpu.get(group):
            rows.append((f"  {label_text}", f"{_num(cpu[group], 2)} ms", ""))
    rows.append(
        (
            "  (not counted: load client; this bench; other programs on the machine)",
            "; ".join(f"{_num(cpu.get(k), 2)} ms" for k in ("client", "bench", "others")),
            "",
        )
    )
    valkey = phase["valkey"]
    top = ", ".join(f"{k} {v}" for k, v in list(valkey["by_command"].items())[:6])
    rows.append(
        (
            "Valkey per task, whole life: commands, round trips",
            f"{_num(valkey['commands_per_task'], 1)}, {_num(valkey['round_trips_per_task'], 1)} ({top})",
            "",
        )
    )
    return rows


def _burst_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    phase = figures.get("burst")
    why = _failed(phase)
    label = "burst: distinct user tokens, one submit each at once"
    if why:
        return [(label, why, "all 202, p99 < 1 s")]
    assert isinstance(phase, dict)
    others = {k: v for k, v in phase["statuses"].items() if k != "202"}
    text = f"{phase['accepted']:,}/{phase['users']:,} answered 202, p50 {_num(phase['p50_ms'], 0)} ms, "
    text += f"p99 {_num(phase['p99_ms'], 0)} ms"
    if others:
        text += " (" + ", ".join(f"{v} x {k}" for k, v in others.items()) + ")"
    return [(label, text, "all 202, p99 < 1 s")]


def _engine_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    batch = figures.get("batch")
    why = _failed(batch)
    if why or not isinstance(batch, dict):
        rows.append(("batch submit, end to end", why or "", "≥ 2,000 tasks/s"))
    elif not batch.get("available"):
        rows.append(("batch submit, end to end", "batch submit: not available", "≥ 2,000 tasks/s"))
    else:
        text = f"{_num(batch['tasks_per_second'])} tasks/s ({batch['ended']:,} tasks, "
        text += f"submits took {_num(batch['submit_seconds'], 2)} s)"
        rows.append(("batch submit, end to end", text, "≥ 2,000 tasks/s"))
    drain = figures.get("drain")
    why = _failed(drain)
    if why or not isinstance(drain, dict):
        rows.append(("drain, every task already in the store", why or "", ""))
    else:
        cpu = drain["cpu_ms_per_task"]
        text = f"{_num(drain['drain_per_second'])} tasks/s ({drain['ended']:,} tasks); engine CPU "
        text += f"{_num(cpu['total'], 2)} ms/task (QueueActor {_num(cpu['queue'], 2)}, KeyPoolActor "
        text += (
            f"{_num(cpu['keypool'], 2)}, workers {_num(cpu['workers'], 2)}, Valkey {_num(cpu['valkey'], 2)})"
        )
        rows.append(("drain, every task already in the store", text, ""))
        valkey = drain["valkey"]
        rows.append(
            (
                "Valkey per task, dispatch to success",
                _valkey(valkey),
                "",
            )
        )
    dispatch = figures.get("dispatch")
    if isinstance(dispatch, dict) and "drain" in dispatch:
        d = dispatch["drain"]
        text = f"p50 {_num(d['p50_ms'], 0)} ms, p99 {_num(d['p99_ms'], 0)} ms ({d['samples']:,} dispatches)"
        rows.append(
            ("dispatch latency while draining (an outcome to the next dispatch)", text, "p99 < 10 ms")
        )
    return rows


def _depth_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    phase = figures.get("depth")
    why = _failed(phase)
    if why:
        return [("submit cost against queue depth", why, "p50s within 20 %")]
    assert isinstance(phase, dict)
    low, high = phase["shallow"], phase["deep"]

    def one(p: dict[str, Any]) -> str:
        cpu = p["cpu_ms_per_submit"]
        return (
            f"p50 {_num(p['p50_ms'], 1)} ms at position ~{p['position_median']:,}, "
            f"CPU {_num(cpu['total'], 2)} ms/submit (ingress {_num(cpu['ingress'], 2)})"
        )

    valkey = low["valkey"]
    return [
        ("submit, short queue (one at a time)", one(low), ""),
        ("submit, long queue (one at a time)", one(high), ""),
        ("submit p50 ratio, long / short queue", _num(phase["p50_ratio"], 2), "≤ 1.2"),
        (
            "Valkey per submit (submits only)",
            _valkey(valkey),
            "",
        ),
    ]


def _sse_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    phase = figures.get("sse")
    why = _failed(phase)
    label = "burst-600 makespan, with task streams open / with none"
    if why:
        return [(label, why, "≤ 1.05")]
    assert isinstance(phase, dict)
    none, many = phase["none"], phase["watched"]
    text = (
        f"{_num(phase['makespan_ratio'], 3)} ({_num(many['makespan_s'], 2)} s with "
        f"{many['watchers_opened']:,} open, {_num(none['makespan_s'], 2)} s with none; ingress CPU "
        f"{_num(many['cpu_s']['ingress'], 1)} s against {_num(none['cpu_s']['ingress'], 1)} s)"
    )
    return [(label, text, "≤ 1.05")]


def _busiest(figures: dict[str, Any]) -> str:
    """The highest 1-minute load average any phase ended with: how much else the machine ran."""
    loads = [
        phase["load_average"][0]
        for phase in figures.values()
        if isinstance(phase, dict) and isinstance(phase.get("load_average"), list)
    ]
    return f"; load average up to {max(loads):.1f}" if loads else ""


def table(figures: dict[str, Any]) -> list[str]:
    """The markdown table of one run."""
    changed = figures.get("changed_files", 0)
    label = f"{figures['label']}; " if figures.get("label") else ""
    lines = [
        f"{label}commit {str(figures.get('commit', '?'))[:12]}"
        f"{f' with {changed} changed files in the tree' if changed else ', clean tree'}; "
        f"{figures.get('cpus')} CPUs; load: {figures.get('load_tool')}; "
        f"{'quick run; ' if figures.get('quick') else ''}{figures.get('minutes', '?')} min"
        f"{_busiest(figures)}",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
    ]
    rows = [
        *_yardstick_rows(figures),
        *_submit_rows(figures),
        *_burst_rows(figures),
        *_engine_rows(figures),
        *_depth_rows(figures),
        *_sse_rows(figures),
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines
