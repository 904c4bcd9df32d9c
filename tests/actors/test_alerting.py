"""An alert raised and resolved on a real QueueActor, delivered signed to a webhook, with no flapping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from actors import factory
from actors.config import AlertsConfig, Secret, WebhooksConfig
from actors.queue.alerts import SIGNER
from actors.webhooks.rules import signing_secret
from events.catalogue import AlertRaised, AlertResolved
from events.redis_store import RedisEventStore
from serve_app.http.metrics import read_figures, render
from serve_app.runtime import resolve
from tests.actors.conftest import Cluster
from tests.helpers import eventually, make_config
from tests.webhook_receiver import Hit, Receiver

SECRET = Secret("alerting test secret")
PATH = "/hooks/genqueue"


async def read_figures_text(cluster: Cluster) -> str:
    """/metrics as the app renders it, from this cluster's store."""
    store = RedisEventStore.from_url(cluster.config.redis.url, cluster.config.redis.namespace)
    try:
        return render(await read_figures(store, cluster.config), cluster.config).decode()
    finally:
        await store.close()


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    """A local receiver that checks the alerts' signature and answers each one's first POST with 503."""
    with Receiver(secrets=[signing_secret(SECRET, SIGNER)], codes={PATH: [503]}) as receiver:
        yield receiver


def test_backlog_alert_is_raised_resolved_and_delivered(
    ray_session: None, store_url: str, data_dir: str, webhook: Receiver
) -> None:
    """8 tasks on one slot raise `backlog` (waiting > 3); draining resolves it once; the webhook gets
    both, signed, each after one retry."""
    alerts = AlertsConfig(waiting_above=3, webhooks=(webhook.url(PATH),), webhook_attempts=4)
    hooks = WebhooksConfig(secret=SECRET, backoff_base=0.1, backoff_cap=0.5, allow_networks=("127.0.0.0/8",))
    base = make_config(store_url, data_dir, slots=1, latency=0.4, alerts=alerts, pools=(("p1", 60000, 1.0),))
    config = resolve(replace(base, webhooks=hooks))
    cluster = Cluster(config, factory.start(config))
    try:
        ids = cluster.submit(8)

        def active() -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = cluster._run(lambda store: store.alerts())
            return result

        listed = eventually(active, timeout=30, what="the alert listed as active")
        assert listed[0]["name"] == "backlog" and listed[0]["threshold"] == 3
        scrape = asyncio.run(read_figures_text(cluster))
        assert 'genqueue_alerts_active{name="backlog"} 1.0' in scrape
        eventually(lambda: cluster.ended(ids), timeout=60, what="all tasks ended")

        def delivered() -> list[Hit]:
            hits = webhook.snapshot()
            return hits if sum(h.answered == 200 for h in hits) >= 2 else []

        received = eventually(delivered, timeout=30, what="both deliveries")
        log = [s.event for s in cluster.log()]
        assert active() == []
    finally:
        factory.stop(config)
    raised = [e for e in log if isinstance(e, AlertRaised)]
    resolved = [e for e in log if isinstance(e, AlertResolved)]
    assert [e.name for e in raised] == ["backlog"] and [e.name for e in resolved] == ["backlog"]
    assert raised[0].value > 3 and resolved[0].value <= 3 * 0.8
    assert [(h.body["state"], h.answered) for h in received] == [
        ("raised", 503),
        ("raised", 200),
        ("resolved", 503),
        ("resolved", 200),
    ]
    assert all(h.verified for h in received) and len({h.webhook_id for h in received}) == 2
    assert received[0].body["detail"].endswith("tasks waiting") and received[0].body["threshold"] == 3
