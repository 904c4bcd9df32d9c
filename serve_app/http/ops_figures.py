"""What `/v1/queue` and `/readyz` show an operator beside the counts: the intake switch and the
queue wait's p50 and p90."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from events.ops_models import Intake
from events.projection import BUCKETS
from events.public_view import iso
from events.redis_store import RedisEventStore

# The histogram the projection keeps of the seconds from submit to the start of the call.
WAIT_HISTOGRAM = "queue_wait"


def histogram_quantile(histogram: Mapping[str, float], q: float) -> float | None:
    """The `q`-quantile (0..1) of a histogram hash (`le:<bound>` counts, as `observe` writes
    them), interpolated within its bucket as Prometheus does; None with no observation. Past
    the last finite bound the answer is that bound."""
    total = histogram.get("count", 0.0)
    if total <= 0:
        return None
    rank, seen, lower = q * total, 0.0, 0.0
    for bound in BUCKETS:
        count = histogram.get(f"le:{bound:g}", 0.0)
        if count > 0 and seen + count >= rank:
            # Clamped: rounding must not carry an estimate past its own bucket's bound.
            return min(float(bound), lower + (bound - lower) * max(0.0, rank - seen) / count)
        seen, lower = seen + count, bound
    return float(BUCKETS[-1])


def wait_json(histogram: Mapping[str, float]) -> dict[str, Any]:
    """The queue wait as `/v1/queue` shows it: p50, p90 (seconds, None before any start), count."""
    p50, p90 = (histogram_quantile(histogram, q) for q in (0.5, 0.9))
    return {
        "p50": None if p50 is None else round(p50, 3),
        "p90": None if p90 is None else round(p90, 3),
        "count": int(histogram.get("count", 0)),
    }


def intake_json(intake: Intake) -> dict[str, Any]:
    """The intake switch as `/v1/queue` and `/readyz` show it."""
    since = intake.since or None
    return {
        "paused": intake.paused,
        "since": since,
        "since_iso": iso(since),
        "reason": intake.reason if intake.paused else None,
        "retry_after_seconds": intake.retry_after if intake.paused else None,
        "by": intake.by or None,
    }


async def ops_figures(store: RedisEventStore) -> dict[str, Any]:
    """`/v1/queue`'s operator fields: the intake switch and the queue wait's quantiles."""
    histograms = await store.histograms([WAIT_HISTOGRAM])
    return {
        "intake": intake_json(await store.intake()),
        "wait_seconds": wait_json(histograms.get(WAIT_HISTOGRAM, {})),
    }
