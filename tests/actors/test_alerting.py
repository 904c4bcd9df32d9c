"""An alert raised and resolved on a real QueueActor, delivered to a webhook, with no flapping."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from actors.config import AlertsConfig
from events.redis_store import RedisEventStore
from serve_app.metrics import read_figures, render
from tests.actors.conftest import Cluster
from tests.helpers import eventually


async def read_figures_text(cluster: Cluster) -> str:
    """/metrics as the app renders it, from this cluster's store."""
    store = RedisEventStore.from_url(cluster.config.redis.url, cluster.config.redis.namespace)
    try:
        return render(await read_figures(store, cluster.config), cluster.config).decode()
    finally:
        await store.close()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP receiver: its URL and the JSON bodies it got; the first POST fails with 503."""
    received: list[dict[str, Any]] = []
    calls = {"n": 0}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls["n"] += 1
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if calls["n"] == 1:  # a failed first delivery must be retried
                self.send_response(503)
            else:
                received.append(body)
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/genqueue", received
    server.shutdown()


def test_backlog_alert_is_raised_resolved_and_delivered(
    make_cluster: Callable[..., Cluster], webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """8 tasks on one slot raise `backlog` (waiting > 3); draining resolves it once; the webhook gets both."""
    url, received = webhook
    alerts = AlertsConfig(waiting_above=3, webhooks=(url,), webhook_attempts=4)
    cluster = make_cluster(slots=1, latency=0.4, alerts=alerts, pools=(("p1", 60000, 1.0),))
    ids = cluster.submit(8)

    def active() -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = cluster._run(lambda store: store.alerts())
        return result

    listed = eventually(active, timeout=30, what="the alert listed as active")
    assert listed[0]["name"] == "backlog" and listed[0]["threshold"] == 3
    scrape = asyncio.run(read_figures_text(cluster))
    assert 'genqueue_alerts_active{name="backlog"} 1.0' in scrape
    eventually(lambda: cluster.ended(ids), timeout=60, what="all tasks ended")
    eventually(lambda: len(received) >= 2, timeout=30, what="both deliveries")
    log = [s.event for s in cluster.log()]
    raised = [e for e in log if e.type == "alert.raised"]
    resolved = [e for e in log if e.type == "alert.resolved"]
    assert [e.name for e in raised] == ["backlog"] and [e.name for e in resolved] == ["backlog"]
    assert raised[0].value > 3 and resolved[0].value <= 3 * 0.8
    assert [(b["name"], b["state"]) for b in received] == [("backlog", "raised"), ("backlog", "resolved")]
    assert received[0]["detail"].endswith("tasks waiting") and received[0]["threshold"] == 3
    assert active() == []
