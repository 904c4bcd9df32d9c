"""Upstream daily quotas reset at midnight Pacific time: the day arithmetic, as pure functions."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")


def pacific_day(at: float) -> str:
    """The calendar date in America/Los_Angeles at epoch time `at`, as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(at, PACIFIC).date().isoformat()


def next_pacific_midnight(at: float) -> float:
    """The epoch time of the first midnight in America/Los_Angeles after `at`."""
    local = dt.datetime.fromtimestamp(at, PACIFIC)
    tomorrow = local.date() + dt.timedelta(days=1)
    return dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=PACIFIC).timestamp()
