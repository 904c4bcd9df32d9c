"""Day arithmetic as pure functions: upstream daily quotas reset at midnight Pacific time, a
user's daily spend cap at midnight UTC."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")
DAY_SECONDS = 86_400


def pacific_day(at: float) -> str:
    """The calendar date in America/Los_Angeles at epoch time `at`, as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(at, PACIFIC).date().isoformat()


def next_pacific_midnight(at: float) -> float:
    """The epoch time of the first midnight in America/Los_Angeles after `at`."""
    local = dt.datetime.fromtimestamp(at, PACIFIC)
    tomorrow = local.date() + dt.timedelta(days=1)
    return dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=PACIFIC).timestamp()


def utc_day(at: float) -> str:
    """The UTC calendar date at epoch time `at`, as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(at, dt.UTC).date().isoformat()


def next_utc_midnight(at: float) -> float:
    """The epoch time of the first UTC midnight after `at` (the start of the next UTC day)."""
    return float((int(at // DAY_SECONDS) + 1) * DAY_SECONDS)
