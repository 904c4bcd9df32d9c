"""What each quota pool looks like right now, from the read models: for /v1/queue, ETAs and /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from actors.config import Config, counted_against
from actors.forecast import PoolWindow, window_capacity
from actors.keypool.status import PoolStatus, pool_status
from actors.linked_pools import counted_grants
from events.days import pacific_day
from events.store import EventStore


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool: its configured and learned rate, its window, and what upstream told it.

    `grants`: the calls in its window as the key pool counts them, its own and those of the
    pools that count against it; `counts_against`: the pools whose windows its calls also take
    a place in, nearest first, and `linked` their windows (each call needs a place in all).
    """

    name: str
    rpm: int
    rate: int
    rpd: int
    window_seconds: float
    margin: float
    keys: int
    grants: tuple[float, ...]
    status: PoolStatus
    calls_today: int
    throttled: int
    service_tier: str = "standard"
    price_per_image: float = 0.0
    counts_against: tuple[str, ...] = ()
    linked: tuple[PoolWindow, ...] = ()

    @property
    def capacity(self) -> int:
        """Calls allowed per window at the learned rate."""
        return window_capacity(self.rate, self.window_seconds)

    @property
    def state(self) -> str:
        """ok, cooling (a per-minute 429), parked (daily quota) or no keys."""
        return self.status.state

    @property
    def serving(self) -> bool:
        """Whether the pool serves calls now or after a cooldown: its rate counts."""
        return self.status.serving

    @property
    def disabled(self) -> tuple[str, ...]:
        """The ids of its keys that upstream rejected and that were not replaced since."""
        return self.status.disabled_keys

    @property
    def window_left(self) -> int:
        """Calls the pool may still make in its current window: a place in its own window and
        in each one it counts against."""
        lefts = [w.capacity - len(w.grants) for w in (self.limit_window(), *self.linked)]
        return max(0, min(lefts))

    @property
    def available_from(self) -> float:
        """When the pool may grant again (inf: never, until its keys are replaced)."""
        return self.status.available_from

    def limit_window(self) -> PoolWindow:
        """The pool's window as a call of a pool counting against it must find a place in it."""
        return PoolWindow(self.capacity, self.window_seconds + self.margin, self.grants)

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
            "service_tier": self.service_tier,
            "price_per_image": self.price_per_image,
            "counts_against": list(self.counts_against),
            "window_seconds": self.window_seconds,
            "margin_seconds": self.margin,
            "keys": self.keys,
            "capacity": self.capacity,
            "window_used": len(self.grants),
            "window_left": self.window_left,
            "cooldown_seconds": round(max(0.0, self.status.cooldown_until - self.status.now), 3),
            "parked_until": self.status.parked_until if self.status.parked else None,
            "disabled_keys": list(self.disabled),
            "calls_today": self.calls_today,
            "throttled": self.throttled,
        }


def grant_reads(config: Config, at: float) -> tuple[dict[str, float], dict[str, int]]:
    """What to read of each pool's grants at `at`: those after this time, at most this many
    (enough for its own window and each window it counts against)."""
    by_name = {p.name: p for p in config.pools}
    since, newest = {}, {}
    for p in config.pools:
        windows = [p, *(by_name[name] for name in counted_against(config.pools, p.name))]
        since[p.name] = at - max(w.window_seconds for w in windows)
        newest[p.name] = max(window_capacity(w.rate, w.window_seconds) for w in windows)
    return since, newest


async def read_pools(store: EventStore, config: Config, now: float | None = None) -> list[PoolView]:
    """Every configured pool's view: two pipelined reads, no actor call."""
    at = time.time() if now is None else now
    grants = await store.grant_times(*grant_reads(config, at))
    states = await store.pool_states([p.name for p in config.pools])
    return pool_views(config, grants, states, at)


def pool_views(
    config: Config, grants: Mapping[str, Sequence[float]], states: Mapping[str, Mapping[str, str]], at: float
) -> list[PoolView]:
    """Every configured pool's view from its grants' times (oldest first) and its read model."""
    today = pacific_day(at)
    links = {p.name: counted_against(config.pools, p.name) for p in config.pools}
    held = counted_grants(
        {p.name: grants.get(p.name, ()) for p in config.pools},
        links,
        {p.name: at - p.window_seconds for p in config.pools},
    )
    views = []
    for p in config.pools:
        fields = states.get(p.name, {})
        disabled = {
            name.removeprefix("disabled:"): json.loads(value).get("hint")
            for name, value in fields.items()
            if name.startswith("disabled:")
        }
        status = pool_status(
            p.name,
            p.key_hints,
            disabled,
            parked_until=float(fields.get("parked_until", 0.0)),
            cooldown_until=float(fields.get("cooldown_until", 0.0)),
            now=at,
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
                grants=held[p.name],
                status=status,
                calls_today=int(fields.get(f"day:{today}", 0)),
                throttled=int(fields.get("throttled", 0)),
                service_tier=p.service_tier,
                price_per_image=p.price_per_image,
                counts_against=links[p.name],
            )
        )
    by_name = {view.name: view for view in views}
    return [
        replace(view, linked=tuple(by_name[name].limit_window() for name in view.counts_against))
        for view in views
    ]
