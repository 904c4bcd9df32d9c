"""Alert rules raise past the threshold, resolve only below the hysteresis band, and never flap."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.config import AlertsConfig, ConfigError, parse
from actors.queue.alerts import alert_webhook_id, evaluate
from actors.queue.state import QueueState, apply
from events.catalogue import AlertRaised, AlertResolved, StoredEvent, TaskDispatched
from tests.helpers import submitted


def fold(state: QueueState, events: list) -> QueueState:  # type: ignore[type-arg]
    for i, e in enumerate(events):
        apply(state, StoredEvent(f"1-{len(state.tasks) + i}", e))
    return state


def test_backlog_raises_above_and_resolves_below_the_band() -> None:
    """Raised at 6 > 5 waiting, still active at 5 and 4.5 (band 0.8 * 5 = 4), resolved at 4."""
    rules = AlertsConfig(waiting_above=5)
    state = QueueState()
    fold(state, [submitted(at=1.0) for _ in range(6)])
    raised = evaluate(state, rules, now=10.0)
    assert [type(e) for e in raised] == [AlertRaised] and raised[0].name == "backlog"
    fold(state, raised)
    assert evaluate(state, rules, now=11.0) == []
    ids = list(state.waiting_order())
    for t in ids[:2]:
        fold(state, [TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=99, at=12.0)])
    assert state.waiting == 4
    resolved = evaluate(state, rules, now=12.0)
    assert [type(e) for e in resolved] == [AlertResolved]
    fold(state, resolved)
    assert "backlog" not in state.alerts and evaluate(state, rules, now=13.0) == []


def test_error_rate_needs_enough_calls_and_uses_its_window() -> None:
    """3 failures of 10 calls in the window raise; the same calls outside the window do not."""
    rules = AlertsConfig(error_rate_above=0.1, error_min_calls=10, error_window_seconds=60)
    state = QueueState()
    for i in range(10):
        state.record_outcome(100.0 + i, ok=i >= 3)
    names = [e.name for e in evaluate(state, rules, now=120.0) if isinstance(e, AlertRaised)]
    assert "upstream_error_rate" in names
    assert not [e for e in evaluate(state, rules, now=400.0) if isinstance(e, AlertRaised)]
    few = QueueState()
    for _ in range(3):
        few.record_outcome(100.0, ok=False)
    assert not [e for e in evaluate(few, rules, now=101.0) if isinstance(e, AlertRaised)]


def test_a_task_processing_too_long_raises_slow_task() -> None:
    """A lease dispatched 200 s ago passes the 180 s rule and names the task; 95 s does not."""
    state = QueueState()
    s = submitted(at=5.0)
    fold(state, [s, TaskDispatched(task_id=s.task_id, attempt=1, worker=0, lease_deadline=999, at=5.0)])
    assert evaluate(state, AlertsConfig(), now=100.0) == []
    (raised,) = [e for e in evaluate(state, AlertsConfig(), now=205.0) if isinstance(e, AlertRaised)]
    assert raised.name == "slow_task" and s.task_id in raised.detail


def test_an_alert_keeps_its_webhook_id_and_raised_and_resolved_differ() -> None:
    """The same alert event has the same webhook id (retries, receivers); its resolution another."""
    raised = AlertRaised(name="backlog", value=9.0, threshold=5.0, detail="9 tasks waiting", at=10.0)
    resolved = AlertResolved(name="backlog", value=3.0, at=10.0)
    assert alert_webhook_id(raised) == alert_webhook_id(replace(raised)) != alert_webhook_id(resolved)
    assert alert_webhook_id(raised).startswith("msg_")


def test_alert_webhooks_need_the_signing_secret_and_errors_hide_their_urls() -> None:
    """[alerts] webhooks without a [webhooks] secret, or one that is not http(s), is a config error
    that does not show the URL (a chat webhook's path is its secret)."""
    hooks = {"webhooks": ["https://hooks.example.com/services/s3cr3t"]}
    with pytest.raises(ConfigError, match=r"\[webhooks\] secret"):
        parse({"alerts": hooks}, {})
    assert parse({"alerts": hooks, "webhooks": {"secret": "s"}}, {}).alerts.webhooks == tuple(
        hooks["webhooks"]
    )
    with pytest.raises(ConfigError) as bad:
        parse({"alerts": {"webhooks": ["ftp://example.com/s3cr3t"]}, "webhooks": {"secret": "s"}}, {})
    assert "s3cr3t" not in str(bad.value)
