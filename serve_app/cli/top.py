"""`genqueue top`: a live terminal view of a running instance, from /v1/queue and /metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from genqueue_client import Client
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile (0-1) of a cumulative histogram, interpolated within its bucket, as Prometheus does."""
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            span = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / span if span else 0.0)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(slots=True)
class Frame:
    """One refresh: the queue overview, the wait histogram, and the completions counted so far."""

    queue: dict[str, Any]
    wait_buckets: list[tuple[float, float]]
    completed: float
    at: float = field(default_factory=time.monotonic)


def fetch(client: Client) -> Frame:
    """Read /v1/queue and /metrics once (a refusal, such as a 401 without an admin token, raises
    the client's GenqueueError)."""
    queue = client.queue()
    buckets: list[tuple[float, float]] = []
    completed = 0.0
    metrics = client.request("GET", "/metrics")
    for family in text_string_to_metric_families(metrics.text):
        for s in family.samples:
            if s.name == "genqueue_queue_wait_seconds_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == "genqueue_tasks_completed_total":
                completed += s.value
    return Frame(queue, sorted(buckets), completed)


def render(frame: Frame, previous: Frame | None) -> Group:
    """The dashboard for one frame; throughput from the change since the previous one."""
    q = frame.queue
    rate = 0.0
    if previous is not None and frame.at > previous.at:
        rate = (frame.completed - previous.completed) / (frame.at - previous.at)
    head = Table(show_header=False, title="genqueue")
    head.add_row("waiting", str(q["waiting"]))
    starting = int(q.get("starting", 0))
    head.add_row("calls in flight", str(q["running"]))
    head.add_row("slots held", f"{q['running'] + starting} / {q['slots']} slots ({starting} not yet calling)")
    head.add_row("throughput", f"{rate:.2f} tasks/s (bound {q['throughput_bound_per_second']:.2f})")
    p50, p99 = (histogram_quantile(frame.wait_buckets, q) for q in (0.5, 0.99))
    head.add_row("wait p50 / p99", f"{p50:.1f} s / {p99:.1f} s")
    head.add_row(
        "ended",
        f"succeeded {q['succeeded']}, failed {q['failed']}, cancelled {q['cancelled']}, "
        f"expired {q.get('expired', 0)}",
    )
    pools = Table(title="pools")
    for col in (
        "pool",
        "state",
        "tokens left",
        "window",
        "rate/min (learned/set)",
        "cooldown",
        "calls",
        "429s",
    ):
        pools.add_column(col)
    for p in q["pools"]:
        state = p.get("state", "ok")
        if p.get("disabled_keys"):
            state += f" ({len(p['disabled_keys'])}/{p['keys']} keys off)"
        pools.add_row(
            p["name"],
            state,
            f"{p['window_left']}/{p['capacity']}",
            f"{p['window_seconds']:g} s",
            f"{p.get('learned_rpm', p['rpm'])}/{p['rpm']}",
            f"{p.get('cooldown_seconds', 0):.1f} s",
            str(p["calls"]),
            str(p.get("throttled", 0)),
        )
    alerts = Table(title="alerts")
    alerts.add_column("active")
    for alert in q.get("alerts", []) or [{"name": "none"}]:
        alerts.add_row(str(alert.get("name", alert)))
    return Group(head, pools, alerts)
