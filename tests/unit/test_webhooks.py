"""The pure parts of completion webhooks: the fold, retry decisions, signing, the body, URL checks."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from actors.audit import audit
from actors.config import ConfigError, Secret, WebhooksConfig, parse
from actors.queue.state import PendingWebhook, QueueState, apply, replay, restore, snapshot
from actors.webhooks.rules import (
    advance,
    after_attempt,
    networks,
    refused_address,
    retry_delay,
    signed_headers,
    signing_secret,
    task_body,
    url_target,
    webhook_id,
)
from events.catalogue import (
    Event,
    StoredEvent,
    TaskCancelled,
    TaskDispatched,
    TaskSucceeded,
    TokenCreated,
    WebhookAttempted,
    WebhookDelivered,
    WebhookFailed,
)
from events.codec import decode, encode
from events.projection import fold_task_view
from serve_app.http.models import TaskViewOut
from tests.helpers import submitted

POLICY = WebhooksConfig(secret=Secret("server"), max_seconds=60.0, backoff_base=1.0, backoff_cap=8.0)
URL = "https://hooks.example.com/done"


def run(events: list[Event], state: QueueState | None = None) -> QueueState:
    """Fold events with consecutive stream ids."""
    return replay([StoredEvent(f"1-{i + 1}", e) for i, e in enumerate(events)], state)


def ended_with_webhook(task_id: str = "t1") -> list[Event]:
    """A task with a webhook that was dispatched and succeeded at t=10."""
    return [
        replace(submitted(task_id), webhook_url=URL, token_id="tok1"),
        TaskDispatched(task_id=task_id, attempt=1, worker=0, lease_deadline=99.0, at=2.0),
        TaskSucceeded(task_id=task_id, attempt=1, result="r", mime_type="image/png", elapsed=1.0, at=10.0),
    ]


def test_an_ended_task_with_a_webhook_is_pending_until_delivered() -> None:
    """Success makes the webhook pending; attempts advance it; delivery removes it."""
    state = run(ended_with_webhook())
    assert state.webhooks == {"t1": PendingWebhook("t1", URL, "tok1", 10.0, 0, 10.0)}
    failed = after_attempt(state.webhooks["t1"], 500, "", 11.0, POLICY, 0.0)
    apply(state, StoredEvent("2-1", failed[0]))
    assert state.webhooks["t1"].attempts == 1 and state.webhooks["t1"].next_at == 11.5
    apply(state, StoredEvent("2-2", failed[0]))  # a repeat changes nothing
    assert state.webhooks["t1"].attempts == 1
    for i, event in enumerate(after_attempt(state.webhooks["t1"], 204, "", 12.0, POLICY, 0.0)):
        apply(state, StoredEvent(f"3-{i}", event))
    assert state.webhooks == {}


def test_a_cancelled_task_gets_its_webhook_and_a_task_without_one_does_not() -> None:
    """Cancellation ends a task too; a task submitted without a URL leaves nothing pending."""
    state = run(
        [
            replace(submitted("a"), webhook_url=URL, token_id="tok1"),
            submitted("b"),
            TaskCancelled(task_id="a", reason="x", at=5.0),
            TaskCancelled(task_id="b", reason="x", at=5.0),
        ]
    )
    assert list(state.webhooks) == ["a"] and state.webhooks["a"].ended_at == 5.0


def test_pending_webhooks_survive_a_snapshot_and_old_snapshots_still_load() -> None:
    """A snapshot keeps pending webhooks; a version 2 snapshot (before webhooks) restores empty."""
    state = run(ended_with_webhook())
    state = run(after_attempt(state.webhooks["t1"], 0, "ConnectError", 11.0, POLICY, 0.5), state)
    taken = json.loads(json.dumps(snapshot(state)))
    assert restore(taken).webhooks == state.webhooks
    old = {k: v for k, v in taken.items() if k != "webhooks"} | {"v": 2}
    assert restore(old).webhooks == {}


def test_two_xx_is_delivered_with_the_same_id_as_every_attempt() -> None:
    """A 2xx records the attempt and the delivery; every event carries the task's webhook id."""
    pending = PendingWebhook("t1", URL, "tok1", 10.0, 2, 14.0)
    attempted, delivered = after_attempt(pending, 200, "", 15.0, POLICY, 0.3)
    assert isinstance(attempted, WebhookAttempted) and attempted.attempt == 3 and attempted.next_at == 0
    assert isinstance(delivered, WebhookDelivered) and delivered.attempts == 3 and delivered.code == 200
    assert attempted.webhook_id == delivered.webhook_id == webhook_id("t1") == "msg_t1"
    assert advance(pending, [attempted, delivered]) is None


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    """Delay n lies in [half, all] of min(cap, base * 2**(n-1))."""
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        assert retry_delay(attempt, POLICY, 0.0) == ceiling / 2
        assert ceiling / 2 <= retry_delay(attempt, POLICY, 0.999) < ceiling


@given(st.lists(st.sampled_from([0, 301, 404, 500, 503]), max_size=40), st.floats(0, 0.999))
def test_failures_are_retried_within_the_bound_then_given_up(codes: list[int], unit: float) -> None:
    """Non-2xx answers are retried at growing times, never past max_seconds after the task
    ended; the last attempt is followed by exactly one outcome."""
    pending: PendingWebhook | None = PendingWebhook("t1", URL, "tok1", 100.0, 0, 100.0)
    outcomes: list[Event] = []
    for code in codes:
        assert pending is not None
        now = pending.next_at
        events = after_attempt(pending, code, "ReadTimeout" if code == 0 else "", now, POLICY, unit)
        outcomes += [e for e in events if not isinstance(e, WebhookAttempted)]
        after = advance(pending, events)
        if after is None:
            assert isinstance(events[-1], WebhookFailed) and "within 60 s" in events[-1].error
            break
        assert now < after.next_at <= 100.0 + POLICY.max_seconds
        pending = after
    assert len(outcomes) <= 1


def test_signatures_verify_with_the_standard_webhooks_library() -> None:
    """Each token's whsec_ secret signs the body; another token's secret or a changed body fails."""
    secret = signing_secret(Secret("server"), "tok1")
    assert secret.startswith("whsec_") and secret != signing_secret(Secret("server"), "tok2")
    assert secret != signing_secret(Secret("other server"), "tok1")
    body = json.dumps({"task_id": "t1", "status": "succeeded"})
    headers = signed_headers(secret, "msg_t1", time.time(), body)
    assert headers["webhook-signature"].startswith("v1,") and headers["webhook-id"] == "msg_t1"
    assert Webhook(secret).verify(body, headers) == {"task_id": "t1", "status": "succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing_secret(Secret("server"), "tok2")).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("succeeded", "failed"), headers)


def test_the_body_is_the_task_view_the_api_shows() -> None:
    """The body built from the read model has exactly the TaskViewOut fields and validates."""
    view = fold_task_view(ended_with_webhook())
    body = task_body("t1", view)
    assert set(body) == set(TaskViewOut.model_fields)
    out = TaskViewOut.model_validate(body)
    assert out.status == "succeeded" and out.result_url == "/v1/tasks/t1/result" and out.finished_at == 10.0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("https:///nohost", "no host"),
        ("https://user:pw@example.com/", "credentials"),
        ("http://example.com:99999/", "not a valid URL"),
        ("https://example.com/" + "x" * 3000, "longer than"),
    ],
)
def test_urls_that_are_not_plain_http_are_refused(url: str, reason: str) -> None:
    """Only http(s) URLs with a host and no credentials are accepted."""
    target = url_target(url)
    assert isinstance(target, str) and reason in target


def test_url_targets() -> None:
    """Host and port, with the scheme's default port."""
    assert url_target("https://Hooks.Example.com/a?b=1") == ("hooks.example.com", 443)
    assert url_target("http://127.0.0.1:8080/") == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.5", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(address: str, kind: str) -> None:
    """Any non-public address among a host's addresses refuses the URL, naming its kind."""
    refused = refused_address(["93.184.215.14", address], ())
    assert refused is not None and kind in refused


def test_allowed_networks_and_public_addresses_pass() -> None:
    """Public addresses pass; an allowed network lets its private addresses through."""
    assert refused_address(["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"], ()) is None
    assert refused_address(["127.0.0.1"], networks(["127.0.0.0/8"])) is None
    assert refused_address(["10.0.0.1"], networks(["127.0.0.0/8"])) is not None


def test_old_events_decode_without_the_new_fields() -> None:
    """A token.created or task.submitted stored before webhooks decodes with empty defaults."""
    token = TokenCreated(token_id="i", digest="d", user_id="u", role="service", at=1.0)
    fields = encode(token)
    old = {k: v for k, v in json.loads(fields["data"]).items() if k != "webhook_url"}
    assert decode({**fields, "data": json.dumps(old)}) == token
    task = submitted("t1")
    fields = encode(task)
    old = {k: v for k, v in json.loads(fields["data"]).items() if k not in ("webhook_url", "token_id")}
    assert decode({**fields, "data": json.dumps(old)}) == task


def test_webhook_config_reads_the_secret_like_a_key_and_checks_networks() -> None:
    """[webhooks] secret takes env:VAR and is hidden in repr; bad networks and bounds are errors."""
    config = parse({"webhooks": {"secret": "env:HOOK", "allow_networks": ["127.0.0.0/8"]}}, {"HOOK": "s3"})
    assert config.webhooks.secret.reveal() == "s3" and "s3" not in repr(config)
    assert config.webhooks.enabled and not parse({}, {}).webhooks.enabled
    assert parse({}, {"GENQUEUE_WEBHOOKS_SECRET": "e"}).webhooks.secret.reveal() == "e"
    for bad in ({"allow_networks": ["nope"]}, {"max_seconds": 0}, {"backoff_cap": 0.5}):
        with pytest.raises(ConfigError):
            parse({"webhooks": bad}, {})


def test_the_audit_flags_a_webhook_recorded_delivered_twice() -> None:
    """`genqueue audit` counts webhook outcomes and fails on a second delivery of one task."""
    events = ended_with_webhook()
    pending = run(events).webhooks["t1"]
    delivered = after_attempt(pending, 200, "", 11.0, POLICY, 0.0)
    once = audit([StoredEvent(f"1-{i + 1}", e) for i, e in enumerate(events + delivered)])
    assert once.ok and once.webhooks == {"delivered": 1} and once.delivered_twice == []
    twice = audit([StoredEvent(f"1-{i + 1}", e) for i, e in enumerate(events + delivered + delivered)])
    assert not twice.ok and twice.delivered_twice == ["t1"]
