"""What each quota pool looks like right now, from the read models: for /v1/queue, ETAs and /metrics."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from actors.config import Config
from actors.eta import PoolWindow
from actors.keypool_logic import window_capacity
from events.days import pacific_day
from events.store import EventStore


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool: its configured and learned rate, its window, and what upstream told it."""

    name: str
    rpm: int
    rate: int
    rpd: int
    window_seconds: float
    margin: float
    keys: int
    grants: tuple[float, ...]
    cooldown_until: float
    parked_until: float
    disabled: tuple[str, ...]
    calls_today: int
    throttled: int
    now: float

    @property
    def capacity(self) -> int:
        """Calls allowed per window at the learned rate."""
        return window_capacity(self.rate, self.window_seconds)

    @property
    def state(self) -> str:
        """ok, cooling (a per-minute 429), parked (daily quota) or no keys."""
        if len(self.disabled) >= self.keys:
            return "no keys"
        if self.parked_until > self.now:
            return "parked"
        if self.cooldown_until > self.now:
            return "cooling"
        return "ok"

    @property
    def window_left(self) -> int:
        """Calls the pool may still make in its current window."""
        return max(0, self.capacity - len(self.grants))

    @property
    def available_from(self) -> float:
        """When the pool may grant again (inf: never, until its keys are replaced)."""
        if self.state == "no keys":
            return math.inf
        return max(self.now, self.cooldown_until, self.parked_until)

    def eta_window(self) -> PoolWindow:
        """The pool as the ETA simulation sees it: a place frees a window and the margin after its grant."""
        return PoolWindow(self.capacity, self.window_seconds + self.margin, self.grants, self.available_from)

    def as_json(self) -> dict[str, Any]:
        """The pool as `/v1/queue` shows it: key ids only, never a key."""
        return {
            "name": self.name,
            "state": self.state,
            "rpm": self.rpm,
            "learned_rpm": self.rate,
            "rpd": self.rpd,
            "window_seconds": self.window_seconds,
            "margin_seconds": self.margin,
            "keys": self.keys,
            "capacity": self.capacity,
            "window_used": len(self.grants),
            "window_left": self.window_left,
            "cooldown_seconds": round(max(0.0, self.cooldown_until - self.now), 3),
            "parked_until": self.parked_until if self.parked_until > self.now else None,
            "disabled_keys": list(self.disabled),
            "calls_today": self.calls_today,
            "throttled": self.throttled,
        }


async def read_pools(store: EventStore, config: Config, now: float | None = None) -> list[PoolView]:
    """Every configured pool's view: two pipelined reads, no actor call."""
    at = time.time() if now is None else now
    grants = await store.grant_times(
        {p.name: at - p.window_seconds for p in config.pools},
        {p.name: window_capacity(p.rate, p.window_seconds) for p in config.pools},
    )
    states = await store.pool_states([p.name for p in config.pools])
    today = pacific_day(at)
    views = []
    for p in config.pools:
        fields = states.get(p.name, {})
        hints = p.key_hints
        disabled = tuple(
            key_id
            for name, value in sorted(fields.items())
            if name.startswith("disabled:")
            and hints.get(key_id := name.removeprefix("disabled:")) == json.loads(value).get("hint")
        )
        views.append(
            PoolView(
                name=p.name,
                rpm=p.rate,
                rate=min(p.rate, int(fields.get("learned_rpm", p.rate))),
                rpd=p.rpd,
                window_seconds=p.window_seconds,
                margin=float(fields.get("learned_margin", config.keypool.margin_seconds)),
                keys=len(p.keys),
                grants=tuple(grants[p.name]),
                cooldown_until=float(fields.get("cooldown_until", 0.0)),
                parked_until=float(fields.get("parked_until", 0.0)),
                disabled=disabled,
                calls_today=int(fields.get(f"day:{today}", 0)),
                throttled=int(fields.get("throttled", 0)),
                now=at,
            )
        )
    return views
