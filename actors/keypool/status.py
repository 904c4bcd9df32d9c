"""Whether a quota pool can serve: its disabled keys, parking and cooldown, as one pure status."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OK, COOLING, PARKED, NO_KEYS = "ok", "cooling", "parked", "no keys"
# The states in which a pool serves calls (a cooldown is a short wait, not an outage).
SERVING = (OK, COOLING)


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """One pool at `now`: which of its keys upstream rejected, and until when it is parked
    (daily quota) or cooling down (a per-minute 429)."""

    name: str
    healthy_keys: tuple[str, ...]  # in configured order
    disabled_keys: tuple[str, ...]  # sorted by key id
    parked_until: float
    cooldown_until: float
    now: float

    @property
    def parked(self) -> bool:
        """Whether its daily quota is spent (whatever its keys)."""
        return self.parked_until > self.now

    @property
    def state(self) -> str:
        """ok, cooling (a per-minute 429), parked (daily quota) or no keys."""
        if not self.healthy_keys:
            return NO_KEYS
        if self.parked:
            return PARKED
        return COOLING if self.cooldown_until > self.now else OK

    @property
    def serving(self) -> bool:
        """Whether the pool serves calls now or after a cooldown."""
        return self.state in SERVING

    @property
    def usable_from(self) -> float:
        """The earliest time at or after `now` when it may serve at all, a cooldown aside
        (inf: never, until its keys are replaced)."""
        return max(self.now, self.parked_until) if self.healthy_keys else math.inf

    @property
    def available_from(self) -> float:
        """The earliest time at or after `now` when it may grant (inf: never)."""
        return max(self.usable_from, self.cooldown_until)


def pool_status(
    name: str,
    key_hints: Mapping[str, str],
    disabled: Mapping[str, str | None],
    parked_until: float,
    cooldown_until: float,
    now: float,
) -> PoolStatus:
    """The status of pool `name` with keys `key_hints` (key id -> hint of the configured key).

    `disabled` maps key ids to the hint each had when upstream rejected it (other pools'
    keys may be in it). A disabled key counts only while the configured key has that hint:
    one whose hint changed was replaced in the config and serves again.
    """
    off = {key_id for key_id, hint in key_hints.items() if key_id in disabled and disabled[key_id] == hint}
    return PoolStatus(
        name=name,
        healthy_keys=tuple(k for k in key_hints if k not in off),
        disabled_keys=tuple(sorted(off)),
        parked_until=parked_until,
        cooldown_until=cooldown_until,
        now=now,
    )


def earliest_usable(statuses: Iterable[PoolStatus]) -> float:
    """The earliest time when some pool may serve a call; inf when none ever will."""
    return min((s.usable_from for s in statuses), default=math.inf)


@dataclass(frozen=True, slots=True)
class Outage:
    """No pool can serve a call: why, in words for a user, and until when (None: until an
    operator replaces the rejected keys)."""

    reason: str
    until: float | None


def utc_text(at: float) -> str:
    """`at` as an ISO 8601 UTC time to the second, e.g. 2025-01-31T08:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def outage(statuses: Iterable[PoolStatus]) -> Outage | None:
    """Why no pool can serve, and until when; None while some pool serves (a cooldown is a
    short wait, not an outage). Every pool out of keys has no end of its own; parked pools
    come back when their daily quota does (midnight Pacific)."""
    pools = list(statuses)
    if not pools or any(s.serving for s in pools):
        return None
    back = earliest_usable(pools)
    until = None if math.isinf(back) else back
    if all(not s.healthy_keys for s in pools):
        return Outage("upstream rejected every API key; an operator must replace the keys", None)
    assert until is not None  # a pool with keys is parked, so it comes back
    if all(s.healthy_keys for s in pools):
        resumes = utc_text(until)
        return Outage(f"every quota pool has used its daily quota; service resumes at {resumes}", until)
    return Outage(
        "every quota pool has used its daily quota or lost its API keys; "
        f"service resumes at {utc_text(until)}",
        until,
    )
