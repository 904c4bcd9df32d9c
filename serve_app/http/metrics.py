"""Prometheus text for `GET /metrics`, built from the Redis read models on each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from actors.config import Config
from events.projection import BUCKETS
from events.store import EventStore, QueueCounts
from serve_app.http.pools import PoolView, read_pools

POOL_STATES = ("ok", "cooling", "parked", "no keys")

HISTOGRAMS = {
    "queue_wait": "Seconds from submit to the start of the upstream call.",
    "processing": "Seconds an upstream call (one attempt) took.",
}


@dataclass(frozen=True, slots=True)
class Figures:
    """Everything one scrape reports, read before rendering."""

    counts: QueueCounts
    histograms: dict[str, dict[str, float]]
    pools: list[PoolView]
    alerts: list[dict[str, Any]] = field(default_factory=list)


async def read_figures(store: EventStore, config: Config) -> Figures:
    """Read the counters, histograms and each pool's current window."""
    counts = await store.counts()
    histograms = await store.histograms(list(HISTOGRAMS))
    return Figures(counts, histograms, await read_pools(store, config), await store.alerts())


class _Scrape(Collector):
    def __init__(self, figures: Figures, config: Config) -> None:
        self._f = figures
        self._config = config

    def collect(self) -> Iterator[Metric]:
        counts, stats = self._f.counts, self._f.counts.stats
        yield GaugeMetricFamily("genqueue_waiting_tasks", "Tasks waiting for a slot.", value=counts.waiting)
        yield GaugeMetricFamily("genqueue_running_tasks", "Tasks holding a slot.", value=counts.running)
        yield GaugeMetricFamily("genqueue_slots", "The slot cap.", value=self._config.queue.slots)
        submitted = CounterMetricFamily("genqueue_tasks_submitted", "Tasks accepted.", labels=["kind"])
        completed = CounterMetricFamily(
            "genqueue_tasks_completed", "Tasks ended, by kind and outcome.", labels=["kind", "outcome"]
        )
        upstream = CounterMetricFamily(
            "genqueue_upstream_calls",
            "Upstream calls by pool and HTTP status (0: no response).",
            labels=["pool", "code"],
        )
        for name, value in sorted(stats.items()):
            parts = name.split(":")
            if parts[0] == "submitted" and len(parts) == 2:
                submitted.add_metric([parts[1]], value)
            elif parts[0] == "completed" and len(parts) == 3:
                completed.add_metric([parts[1], parts[2]], value)
            elif parts[0] == "upstream" and len(parts) == 3:
                upstream.add_metric([parts[1], parts[2]], value)
        yield from (submitted, completed, upstream)
        for name, doc in HISTOGRAMS.items():
            yield self._histogram(name, doc)
        capacity = GaugeMetricFamily(
            "genqueue_pool_capacity", "Calls a pool allows per window.", labels=["pool"]
        )
        tokens = GaugeMetricFamily(
            "genqueue_pool_tokens_available", "Calls a pool can make now.", labels=["pool"]
        )
        calls = CounterMetricFamily("genqueue_pool_calls", "Tokens a pool has handed out.", labels=["pool"])
        rate = GaugeMetricFamily(
            "genqueue_pool_rate_per_minute",
            "A pool's rate: configured, or lower once learned.",
            labels=["pool"],
        )
        state = StateSetMetricFamily("genqueue_pool_state", "A pool's state.", labels=["pool"])
        disabled = GaugeMetricFamily(
            "genqueue_pool_keys_disabled", "Keys of a pool that upstream rejected.", labels=["pool"]
        )
        for view in self._f.pools:
            capacity.add_metric([view.name], view.capacity)
            tokens.add_metric([view.name], 0 if view.state != "ok" else view.window_left)
            calls.add_metric([view.name], stats.get(f"calls:{view.name}", 0.0))
            rate.add_metric([view.name], view.rate)
            state.add_metric([view.name], {s: s == view.state for s in POOL_STATES})
            disabled.add_metric([view.name], len(view.disabled))
        yield from (capacity, tokens, calls, rate, state, disabled)
        alerts = GaugeMetricFamily(
            "genqueue_alerts_active", "Active alerts (1 while raised).", labels=["name"]
        )
        for alert in self._f.alerts:
            alerts.add_metric([str(alert["name"])], 1.0)
        yield alerts

    def _histogram(self, name: str, doc: str) -> HistogramMetricFamily:
        data = self._f.histograms.get(name, {})
        running, buckets = 0.0, []
        for bound in (*(f"{b:g}" for b in BUCKETS), "+Inf"):
            running += data.get(f"le:{bound}", 0.0)
            buckets.append((bound, running))
        return HistogramMetricFamily(
            f"genqueue_{name}_seconds", doc, buckets=buckets, sum_value=data.get("sum", 0.0)
        )


def render(figures: Figures, config: Config) -> bytes:
    """The Prometheus text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(figures, config))
    return generate_latest(registry)
