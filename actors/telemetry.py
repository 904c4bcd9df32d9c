"""Metrics through `ray.util.metrics`: they reach Ray's Prometheus endpoint and the Ray dashboard."""

from __future__ import annotations

from typing import Any

from events.projection import BUCKETS


class QueueMetrics:
    """The QueueActor's gauges (the ray_ prefix is added by Ray)."""

    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        self.waiting: Any = Gauge("genqueue_waiting_tasks", description="Tasks waiting for a slot.")
        self.running: Any = Gauge("genqueue_running_tasks", description="Tasks holding a slot.")

    def update(self, waiting: int, running: int) -> None:
        """Set the gauges."""
        self.waiting.set(waiting)
        self.running.set(running)


class WorkerMetrics:
    """Upstream calls and their durations, as the workers see them."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Histogram

        self.calls: Any = Counter(
            "genqueue_upstream_calls",
            description="Upstream calls by pool and status.",
            tag_keys=("pool", "code"),
        )
        self.processing: Any = Histogram(
            "genqueue_processing_seconds",
            description="Seconds one upstream call took.",
            boundaries=list(BUCKETS),
        )
        self.queue_wait: Any = Histogram(
            "genqueue_queue_wait_seconds",
            description="Seconds from submit to call start.",
            boundaries=list(BUCKETS),
        )

    def call(self, pool: str, code: int, seconds: float) -> None:
        """Record one finished call."""
        self.calls.inc(1, tags={"pool": pool, "code": str(code)})
        self.processing.observe(seconds)


POOL_STATES = ("ok", "cooling", "parked", "no keys")


class PoolMetrics:
    """Each pool's budget left in its window, its rate and its state (an index into POOL_STATES)."""

    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        self.tokens: Any = Gauge(
            "genqueue_pool_tokens_available", description="Calls a pool can make now.", tag_keys=("pool",)
        )
        self.rate: Any = Gauge(
            "genqueue_pool_rate_per_minute",
            description="A pool's rate: configured, or lower once learned.",
            tag_keys=("pool",),
        )
        self.state: Any = Gauge(
            "genqueue_pool_state_index",
            description="A pool's state: 0 ok, 1 cooling, 2 parked, 3 no keys.",
            tag_keys=("pool",),
        )

    def update(self, pool: str, available: int, rate: int, state: str) -> None:
        """Set one pool's gauges."""
        tags = {"pool": pool}
        self.tokens.set(available, tags=tags)
        self.rate.set(rate, tags=tags)
        self.state.set(POOL_STATES.index(state), tags=tags)
