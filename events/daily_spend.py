"""A user's daily spend for `[credits] daily_cap`: the credits charged to it per UTC calendar day,
net of that day's refunds.

A day is the UTC calendar day of an event's `at` (midnight to midnight UTC, whatever the
user's or the server's time zone). Each credits.charged adds its amount to the day of its own
`at`, each credits.refunded takes its amount off the day of *its* `at`: a refund frees room on
the day it is made, whichever day the task was charged on.

Each (user, day) count is a hash of its own, field `spent`, named like a user's hash with the
id `<user id>/<YYYY-MM-DD>` (`day_id`): no user id holds a '/', so no user's hash has that
name, and `EventStore.user` reads it like any user's. Every charge or refund sets it to expire
`SPENT_SECONDS` later, so a user's memory stays bounded: at most the counts of the last three
days live (today's, and at most two older ones on their way out), and none two days after the
user's last charge or refund. Only the count of the submit's own day is ever read.
"""

from __future__ import annotations

from events.days import DAY_SECONDS, utc_day
from events.keys import Keys
from events.read_ops import Expire, HIncr, Op

# A day's count outlives its last write by two days: whole through its day whatever the hour
# of that write, with a day to spare for clocks and late events.
SPENT_SECONDS = 2 * DAY_SECONDS
# The field of a day's hash that holds its net spend.
SPENT = "spent"


def day_id(user_id: str, day: str) -> str:
    """The id whose user hash holds `user_id`'s net spend on `day` (YYYY-MM-DD)."""
    return f"{user_id}/{day}"


def day_key(keys: Keys, user_id: str, at: float) -> str:
    """The hash of `user_id`'s net spend on the UTC day of `at`."""
    return keys.user(day_id(user_id, utc_day(at)))


def spend_ops(keys: Keys, user_id: str, at: float, delta: int) -> list[Op]:
    """What a charge (`delta` > 0) or a refund (`delta` < 0) at `at` writes: the UTC day's net
    spend, and its expiry."""
    key = day_key(keys, user_id, at)
    return [HIncr(key, SPENT, delta), Expire(key, SPENT_SECONDS)]
