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
from collections.abc import Mapping, Sequence
from typing import Any

from actors.config import AlertsConfig
from actors.keypool.status import pool_status
from actors.queue.state import OUTCOME_BUCKET_SECONDS, QueueState
from events.catalogue import AlertRaised, AlertResolved, Event

# Alerts are signed as if by a token with this id, so `genqueue token secret alerts` prints
# their whsec_ secret. Token ids are 12 hex digits: none is this one.
SIGNER = "alerts"


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def error_rate(state: QueueState, now: float, window: float) -> tuple[float, int]:
    """(share of failed upstream calls, calls) over the buckets inside the last `window` seconds."""
    since = now - window - OUTCOME_BUCKET_SECONDS
    ok = errors = 0
    for bucket, (good, bad) in state.outcomes.items():
        if bucket >= since:
            ok += good
            errors += bad
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
    rules; a disabled key whose hint changed was replaced and no longer alerts.
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
        checks.append(
            (
                f"pool_parked:{pool}",
                1.0 if status.parked else 0.0,
                0.5,
                f"pool {pool} is parked until its daily quota resets at {_utc(status.parked_until)}",
            )
        )
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
    events: list[Event] = []
    for name, value, threshold, detail in checks:
        active = name in state.alerts
        if not active and value > threshold:
            events.append(AlertRaised(name=name, value=value, threshold=threshold, detail=detail, at=now))
        elif active and value <= threshold * rules.resolve_ratio:
            events.append(AlertResolved(name=name, value=value, at=now))
    return events


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
