"""The Deliverer and its POSTs on a real Valkey and real local receivers, without Ray: names are
resolved once per attempt and connected to as checked, and alerts go out checked and signed."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import subprocess
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import replace
from typing import Any

import httpx
import pytest
import structlog

from actors.config import AlertsConfig, Config, Secret, WebhooksConfig
from actors.queue.alerts import SIGNER, alert_webhook_id, payload
from actors.queue.state import PendingWebhook
from actors.webhooks.rules import signing_secret
from actors.webhooks.sender import Deliverer, post_checked
from events.catalogue import AlertNotified, AlertRaised, TaskDispatched, TaskSucceeded, WebhookAttempted
from tests.helpers import append_to, eventually, log_of, make_config, submitted
from tests.webhook_receiver import Receiver

SECRET = Secret("sender test secret")
FAST = WebhooksConfig(secret=SECRET, backoff_base=0.05, backoff_cap=0.1, max_seconds=30.0)


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog entry made meanwhile, from any thread."""
    with structlog.testing.capture_logs() as entries:
        yield entries


def ended_task(config: Config, url: str) -> PendingWebhook:
    """A task that asked for a webhook to `url` and has succeeded, in the store; its pending webhook."""
    now = time.time()
    task = replace(submitted(), webhook_url=url, token_id="tok-sender")
    append_to(
        config,
        [
            task,
            TaskDispatched(task_id=task.task_id, attempt=1, worker=0, lease_deadline=now + 60, at=now),
            TaskSucceeded(
                task_id=task.task_id, attempt=1, result="r", mime_type="image/png", elapsed=0.1, at=now
            ),
        ],
    )
    return PendingWebhook(task.task_id, url, "tok-sender", now, 0, now)


def test_a_name_rebound_to_loopback_after_its_check_is_not_connected_to(
    store_url: str, data_dir: str, logs: list[MutableMapping[str, Any]]
) -> None:
    """`localhost` first resolves to an allowed 127.0.0.2, then to 127.0.0.1: the first attempt
    reaches 127.0.0.2 under the name's Host header, never the system's 127.0.0.1, and the retry
    resolves again and is refused; no log line shows the URL's path."""
    hooks = replace(FAST, allow_networks=("127.0.0.2/32",))
    config = replace(make_config(store_url, data_dir), webhooks=hooks)
    answers: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        answers.append("127.0.0.2" if not answers else "127.0.0.1")
        return [answers[-1]]

    with (
        Receiver(host="127.0.0.2", codes={"/hook/s3cr3t": [500]}) as checked,
        Receiver(host="127.0.0.1", port=checked.port) as internal,
    ):
        checked.secrets.append(signing_secret(SECRET, "tok-sender"))
        pending = ended_task(config, f"http://localhost:{checked.port}/hook/s3cr3t")
        deliverer = Deliverer(config, random.Random(1), resolver=rebinding)
        try:
            deliverer.start(pending)

            def attempts() -> list[WebhookAttempted]:
                found = [s.event for s in log_of(config) if isinstance(s.event, WebhookAttempted)]
                return found if len(found) >= 2 or any(a.code == 200 for a in found) else []

            tried = eventually(attempts, timeout=30, what="two attempts, or a delivery")
        finally:
            deliverer.stop()
        assert internal.snapshot() == []
        (hit,) = checked.snapshot()
        assert hit.host == f"localhost:{checked.port}" and hit.verified and hit.answered == 500
        assert tried[1].code == 0 and "127.0.0.1, a loopback address" in tried[1].error
        assert answers[:2] == ["127.0.0.2", "127.0.0.1"]
    failed = [e for e in logs if e["event"] == "webhook attempt failed"]
    assert failed and all(e["receiver"] == f"http://localhost:{checked.port}" for e in failed)
    assert not [e for e in logs if "s3cr3t" in repr(e)]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for the name hooks.test only (no address in it), and its key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def post(url: str, addresses: list[str], cafile: str | None = None) -> httpx.Response:
    """`post_checked` with a client that trusts `cafile` (when given)."""

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=cafile)) as client:
            return await post_checked(client, url, addresses, "{}", {"content-type": "application/json"})

    return asyncio.run(main())


def test_https_to_a_checked_address_verifies_the_certificate_against_the_url_name(
    certificate: tuple[str, str],
) -> None:
    """hooks.test resolves nowhere, yet a POST pinned to 127.0.0.1 arrives with its Host header and
    the certificate for hooks.test verifies; the same address under another name fails to verify."""
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with Receiver(tls=tls) as receiver:
        answered = post(f"https://hooks.test:{receiver.port}/hook", ["127.0.0.1"], cert)
        assert answered.status_code == 200
        assert [h.host for h in receiver.snapshot()] == [f"hooks.test:{receiver.port}"]
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            post(f"https://other.test:{receiver.port}/hook", ["127.0.0.1"], cert)
        assert len(receiver.snapshot()) == 1


def test_an_address_that_refuses_the_connection_gives_way_to_the_next() -> None:
    """Nothing listens on 127.0.0.3: the POST goes on to the host's next checked address."""
    with Receiver() as receiver:
        answered = post(f"http://hooks.test:{receiver.port}/hook", ["127.0.0.3", "127.0.0.1"])
        assert answered.status_code == 200 and len(receiver.snapshot()) == 1


def test_alerts_are_checked_signed_retried_and_logged_without_their_path(
    store_url: str, data_dir: str, logs: list[MutableMapping[str, Any]]
) -> None:
    """An alert reaches a loopback receiver (allowed) signed with the `alerts` secret, again after
    a 503 under the same webhook id; a private URL is refused on each attempt; each receiver's
    outcome is recorded in the log; the logs and events name each receiver as
    scheme://host:port and never show a path or query."""
    with Receiver(codes={"/services/T0/s3cr3t": [503]}) as receiver:
        receiver.secrets.append(signing_secret(SECRET, SIGNER))
        alerts = AlertsConfig(
            webhooks=(receiver.url("/services/T0/s3cr3t?token=s3cr3t"), "http://10.1.2.3/s3cr3t"),
            webhook_attempts=2,
        )
        hooks = replace(FAST, allow_networks=("127.0.0.0/8",))
        config = replace(make_config(store_url, data_dir), webhooks=hooks, alerts=alerts)
        event = AlertRaised(
            name="backlog", value=60.0, threshold=50.0, detail="60 tasks waiting", at=time.time()
        )
        deliverer = Deliverer(config, random.Random(1))
        try:
            deliverer.alert(event)

            def recorded() -> list[AlertNotified]:
                return [s.event for s in log_of(config) if isinstance(s.event, AlertNotified)]

            eventually(lambda: len(recorded()) == 2, timeout=30, what="both deliveries recorded")
        finally:
            deliverer.stop()
        hits = receiver.snapshot()
        sent = {e.receiver: e for e in recorded()}
    assert sent[f"http://127.0.0.1:{receiver.port}"].delivered and sent["http://10.1.2.3:80"].attempts == 2
    assert not sent["http://10.1.2.3:80"].delivered and "s3cr3t" not in repr(sent)
    assert [h.answered for h in hits] == [503, 200] and all(h.verified for h in hits)
    assert {h.webhook_id for h in hits} == {alert_webhook_id(event)}
    assert hits[-1].body == json.loads(json.dumps(payload(event, config.redis.namespace)))
    refused = [e for e in logs if e.get("receiver") == "http://10.1.2.3:80"]
    assert all("10.1.2.3, a private address" in e["error"] for e in refused)
    failed = [e for e in logs if e.get("code") == 503]
    assert [e["receiver"] for e in failed] == [f"http://127.0.0.1:{receiver.port}"]
    assert not [e for e in logs if "s3cr3t" in repr(e)]
