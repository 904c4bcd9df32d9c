"""The queue wait's quantiles as the ops page shows them, from the histogram the projection keeps."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from events.projection import BUCKETS, observe
from events.read_ops import HIncr
from serve_app.http.ops_figures import histogram_quantile, wait_json


def histogram(values: list[float]) -> dict[str, float]:
    """The hash `observe` leaves after these observations."""
    fields: dict[str, float] = {}
    for value in values:
        for op in observe("h", value):
            assert isinstance(op, HIncr)
            fields[op.field] = fields.get(op.field, 0.0) + op.amount
    return fields


def bucket_of(value: float) -> tuple[float, float]:
    """The (lower, upper] bounds of the bucket that holds `value`."""
    lower = 0.0
    for bound in BUCKETS:
        if value <= bound:
            return lower, bound
        lower = bound
    return BUCKETS[-1], math.inf


@given(st.lists(st.floats(0.0, 900.0), min_size=1, max_size=200), st.sampled_from([0.5, 0.9]))
def test_a_quantile_lies_in_the_bucket_of_the_true_one(values: list[float], q: float) -> None:
    """The estimate falls within the bucket that holds the true quantile (the last finite bound
    past the last one)."""
    ordered = sorted(values)
    true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    lower, upper = bucket_of(true)
    estimate = histogram_quantile(histogram(values), q)
    assert estimate is not None
    assert lower <= estimate <= min(upper, BUCKETS[-1]), (estimate, lower, upper)


def test_within_a_bucket_the_quantile_is_interpolated_and_none_before_any_start() -> None:
    """Ten waits between 10 and 30 s: p50 halfway through that bucket, p90 at 90 % of it; no
    observation gives None."""
    assert wait_json({}) == {"p50": None, "p90": None, "count": 0}
    shown = wait_json(histogram([12.0] * 10))
    assert shown == {"p50": 20.0, "p90": 28.0, "count": 10}
