"""Alert rules, evaluated by the QueueActor on its own state: pure decisions with hysteresis.

A rule raises when its value passes the threshold and resolves only once the value is
back at or under `resolve_ratio` * threshold, so a value hovering at the threshold does
not flap. Raised and resolved alerts are events; the `[alerts] webhooks` get them as JSON,
sent, checked and signed like task webhooks (by `actors.webhooks.sender.Deliverer`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from actors.config import AlertsConfig
from actors.config.pools import usd
from actors.keypool.status import pool_status
from actors.queue.buckets import bucket_sums
from actors.queue.state import QueueState
from events.catalogue import AlertRaised, AlertResolved, Event, KeyParked

# Alerts are signed as if by a token with this id, so `genqueue token secret alerts` prints
# their whsec_ secret. Token ids are 12 hex digits: none is this one.
SIGNER = "alerts"


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def error_rate(state: QueueState, now: float, window: float) -> tuple[float, int]:
    """(share of failed upstream calls, calls) over the buckets inside the last `window` seconds."""
    ok, errors = bucket_sums(state.outcomes, now, window)
    calls = ok + errors
    return (errors / calls if calls else 0.0), calls


def evaluate(
    state: QueueState,
    rules: AlertsConfig,
    now: float,
    pools: Sequence[tuple[str, Mapping[str, str]]] = (),
) -> list[Event]:
    """The alert events that the state calls for at `now`; empty when nothing changes.

    `pools` names each pool's keys (key id -> hint) for the parked-pool and disabled-key
    rules; a disabled key whose hint changed was replaced and no longer alerts. A pool parked
    by its spend cap has the key pool's `spend_cap:<pool>` alert (`spend_cap_alert`) instead
    of `pool_parked:<pool>`; it is resolved here once the pool is no longer parked.
    """
    rate, calls = error_rate(state, now, rules.error_window_seconds)
    oldest = min((lease.since for lease in state.running.values() if lease.since), default=now)
    slowest = max(
        ((now - lease.since, task) for task, lease in state.running.items() if lease.since), default=(0.0, "")
    )
    checks = [
        ("backlog", float(state.waiting), float(rules.waiting_above), f"{state.waiting} tasks waiting"),
        (
            "upstream_error_rate",
            rate if calls >= rules.error_min_calls else 0.0,
            rules.error_rate_above,
            f"{rate:.0%} of {calls} upstream calls failed in {rules.error_window_seconds:g} s",
        ),
        (
            "slow_task",
            now - oldest,
            rules.processing_above_seconds,
            f"task {slowest[1]} processing for {slowest[0]:.0f} s",
        ),
    ]
    for pool, hints in pools:
        status = pool_status(pool, hints, state.disabled, state.parked.get(pool, 0.0), 0.0, now)
        capped = f"{SPEND_CAP}{pool}" in state.alerts
        checks.append(
            (
                f"pool_parked:{pool}",
                1.0 if status.parked and not capped else 0.0,
                0.5,
                f"pool {pool} is parked until its daily quota resets at {_utc(status.parked_until)}",
            )
        )
        # Raised only by the key pool, with the park: here it can only be resolved.
        checks.append((f"{SPEND_CAP}{pool}", 1.0 if status.parked and capped else 0.0, 0.5, ""))
        for key_id in hints:
            off = key_id in status.disabled_keys
            detail = f"key {key_id} was rejected by upstream and is disabled; replace it in the config"
            checks.append((f"key_disabled:{key_id}", 1.0 if off else 0.0, 0.5, detail))
    gone = state.last_not_found > state.last_success
    checks.append(
        (
            "model_not_found",
            1.0 if gone else 0.0,
            0.5,
            "upstream answers 404 for the configured model: it was retired or renamed; set provider.model",
        )
    )
    checks += downgrade_checks(state, rules, now)
    return transitions(checks, state.alerts, rules, now)


def transitions(
    checks: Iterable[tuple[str, float, float, str]], active: Collection[str], rules: AlertsConfig, now: float
) -> list[Event]:
    """The events of the checks (name, value, threshold, detail) whose alert changes at `now`:
    raised above its threshold, resolved at or under `resolve_ratio` of it."""
    events: list[Event] = []
    for name, value, threshold, detail in checks:
        on = name in active
        if not on and value > threshold:
            events.append(AlertRaised(name=name, value=value, threshold=threshold, detail=detail, at=now))
        elif on and value <= threshold * rules.resolve_ratio:
            events.append(AlertResolved(name=name, value=value, at=now))
    return events


DOWNGRADED = "downgraded:"
SPEND_CAP = "spend_cap:"


def spend_cap_alert(park: KeyParked, calls: int, price: float, cap: float) -> AlertRaised:
    """`spend_cap:<pool>`, raised by the key pool with the park of a pool whose `calls` today at
    `price` USD reached its `max_spend_per_day` `cap` (resolved by `evaluate` once unparked)."""
    spent = calls * price
    detail = (
        f"pool {park.pool} reached its daily spend cap: ${usd(spent)} of ${usd(cap)} today "
        f"({calls} calls at ${usd(price)} an image); parked until {_utc(park.until)} (midnight "
        "Pacific) while the other pools serve; a higher max_spend_per_day applies from the next day"
    )
    return AlertRaised(
        name=f"{SPEND_CAP}{park.pool}", value=round(spent, 6), threshold=cap, detail=detail, at=park.at
    )


def tier_share(state: QueueState, pool: str, now: float, window: float) -> tuple[float, int, int]:
    """(share served at another tier, those calls, all calls) of priority pool `pool` over the
    buckets inside the last `window` seconds."""
    calls, down = bucket_sums(state.tiers.get(pool, {}), now, window)
    return (down / calls if calls else 0.0), down, calls


def downgrade_checks(
    state: QueueState, rules: AlertsConfig, now: float
) -> list[tuple[str, float, float, str]]:
    """`downgraded:<pool>`: more than `downgraded_above` of a priority pool's calls answered in
    the last `error_window_seconds` (at least `error_min_calls` of them) were served at another
    tier: upstream's priority limit is below the pool's rate."""
    window = rules.error_window_seconds
    checks = []
    for pool in sorted(state.tiers):
        share, down, calls = tier_share(state, pool, now, window)
        detail = (
            f"pool {pool} asks for priority, and upstream served {down} of its {calls} calls in the "
            f"last {window:g} s at standard ({share:.0%}): its priority limit is below the pool's rate; "
            "lower the pool's rpm or expect standard latency"
        )
        value = share if calls >= rules.error_min_calls else 0.0
        checks.append((f"{DOWNGRADED}{pool}", value, rules.downgraded_above, detail))
    return checks


def payload(event: AlertRaised | AlertResolved, namespace: str) -> dict[str, Any]:
    """The JSON a webhook receives."""
    body: dict[str, Any] = {
        "namespace": namespace,
        "state": "raised" if isinstance(event, AlertRaised) else "resolved",
    }
    body.update({f.name: getattr(event, f.name) for f in dataclasses.fields(event)})
    return body


def alert_webhook_id(event: AlertRaised | AlertResolved) -> str:
    """The `webhook-id` of an alert's webhook: the same on every retry and to every receiver."""
    state = "raised" if isinstance(event, AlertRaised) else "resolved"
    return "msg_alert_" + hashlib.sha256(f"{state}:{event.name}:{event.at!r}".encode()).hexdigest()[:24]
