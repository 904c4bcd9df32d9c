"""Counters in 10 s buckets over the last ten minutes: upstream outcomes and priority tiers."""

from __future__ import annotations

OUTCOME_BUCKET_SECONDS = 10
OUTCOME_BUCKETS = 60  # ten minutes: the longest error-rate window an alert rule may use


def count_in_bucket(buckets: dict[int, list[int]], at: float, which: int) -> None:
    """Add one to counter `which` of the OUTCOME_BUCKET_SECONDS bucket holding `at`, keeping
    the newest OUTCOME_BUCKETS buckets."""
    bucket = int(at // OUTCOME_BUCKET_SECONDS) * OUTCOME_BUCKET_SECONDS
    buckets.setdefault(bucket, [0, 0])[which] += 1
    if len(buckets) > OUTCOME_BUCKETS:
        for old in sorted(buckets)[: len(buckets) - OUTCOME_BUCKETS]:
            del buckets[old]


def bucket_sums(buckets: dict[int, list[int]], now: float, window: float) -> tuple[int, int]:
    """The two counters summed over the buckets inside the last `window` seconds at `now`."""
    since = now - window - OUTCOME_BUCKET_SECONDS
    first = second = 0
    for bucket, (a, b) in buckets.items():
        if bucket >= since:
            first += a
            second += b
    return first, second
