"""Gemini's service tiers as the emulator serves them: one project's budget for one model, a
window per tier, with time passed in.

- standard: the project's window (capacity = rpm * window / 60) and its count per Pacific day;
- priority: a window of its own (a fraction of the standard limit), and a call served at
  priority also takes a place in the standard window. A priority call finding its own window
  full is served at standard, without an error, when the standard window has a place (a
  downgrade: the answer's header says standard); with no standard place left it is a 429;
- flex: a window of its own, counted neither against standard nor the day; its calls are
  answered later (`EmulatorConfig.flex_latency`).

A tier whose limit is 0 is not offered: its calls are served at standard.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from actors.config import FLEX, PRIORITY, STANDARD
from emulator.wire import BadRequest, ProjectQuota, TierLimits, Verdict

# The response header that names the tier which served a call; on every answer.
TIER_HEADER = "x-gemini-service-tier"
# How a request may name a tier: the SDK's lower-case enum values, the API's upper-case ones.
_NAMES = {"": STANDARD, "unspecified": STANDARD, STANDARD: STANDARD, FLEX: FLEX, PRIORITY: PRIORITY}


def requested_tier(body: dict[str, Any]) -> str:
    """The tier a generateContent body asks for (`serviceTier`; none: standard); BadRequest for
    a value the API does not know."""
    raw = body.get("serviceTier", body.get("service_tier")) or ""
    name = str(raw).strip().lower().removeprefix("service_tier_")
    if name not in _NAMES:
        raise BadRequest(
            f"Invalid value at 'service_tier' (type.googleapis.com/google.ai.generativelanguage.v1beta."
            f'ServiceTier), "{raw}"'
        )
    return _NAMES[name]


class ModelQuota:
    """A project's budget for one model, per tier (see the module docstring)."""

    def __init__(self, limits: TierLimits, window: float, rpd: int) -> None:
        self.limits = limits
        self.standard = ProjectQuota(limits.rpm, window, rpd)
        # None: priority is never served at priority (every such call goes to standard).
        self.priority = ProjectQuota(limits.priority_rpm, window, 0) if limits.priority_rpm else None
        self.flex = ProjectQuota(limits.flex_rpm, window, 0) if limits.flex_rpm else None
        self.downgraded = 0

    def admit(self, tier: str, now: float, wall: dt.datetime) -> Verdict:
        """Serve or refuse a call asking for `tier` at monotonic `now`, aware wall-clock `wall`;
        an accepted verdict names the tier that served it."""
        if tier == FLEX:
            if self.flex is None:
                return replace(self.standard.admit(now, wall), tier=STANDARD)
            return replace(self.flex.admit(now, wall), tier=FLEX)
        spare = tier == PRIORITY and self.priority is not None and self.priority.room(now)
        verdict = self.standard.admit(now, wall)
        if not verdict.accepted:
            return verdict
        if spare and self.priority is not None:
            self.priority.take(now)
            return replace(verdict, tier=PRIORITY)
        self.downgraded += tier == PRIORITY
        return replace(verdict, tier=STANDARD)

    def stats(self) -> dict[str, Any]:
        """The model's limits and the most calls seen in one window of each tier."""
        return {
            "rpm": self.limits.rpm,
            "priority_rpm": self.limits.priority_rpm,
            "flex_rpm": self.limits.flex_rpm,
            "capacity": self.standard.capacity,
            "priority_capacity": self.priority.capacity if self.priority else 0,
            "flex_capacity": self.flex.capacity if self.flex else 0,
            "max_window_calls": self.standard.max_window_calls,
            "max_priority_window_calls": self.priority.max_window_calls if self.priority else 0,
            "day_calls": self.standard.day_calls,
            "downgraded": self.downgraded,
        }

    def reset(self) -> None:
        """Zero the counts; the windows keep what they have used."""
        for quota in (self.standard, self.priority, self.flex):
            if quota is not None:
                quota.max_window_calls = 0
        self.downgraded = 0
