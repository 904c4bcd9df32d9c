"""Completion webhooks end to end: Ray Serve, the actors, embedded Valkey and a real local receiver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from actors.config import Secret, WebhooksConfig
from actors.webhooks.rules import signing_secret, webhook_id
from serve_app.cli.burst import payload
from serve_app.cli.main import app
from serve_app.http.auth import new_token
from serve_app.http.models import TaskViewOut
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.helpers import append_to, eventually, log_of, make_config
from tests.webhook_receiver import Receiver

SERVER_SECRET = Secret("a test server secret for webhooks")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A local receiver that answers /flaky with 500 twice, then 200."""
    with Receiver(codes={"/flaky": [500, 500]}) as r:
        yield r


@pytest.fixture(scope="module")
def live(ray_session: None, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Tokens required; webhooks signed with a test secret, retried fast, loopback allowed."""
    base = make_config(store_url, str(tmp_path_factory.mktemp("hooks")), port=free_port(), auth=True)
    hooks = WebhooksConfig(
        secret=SERVER_SECRET,
        backoff_base=0.1,
        backoff_cap=0.5,
        max_seconds=30.0,
        allow_networks=("127.0.0.0/8",),
    )
    with running(replace(base, webhooks=hooks), dashboard=False) as r:
        yield r


def token(live: Running, user: str, role: str, webhook_url: str = "") -> tuple[dict[str, str], str]:
    """Authorization headers of a new token, and its id."""
    secret, event = new_token(user, role, webhook_url)
    append_to(live.config, [event])
    return {"Authorization": f"Bearer {secret}"}, event.token_id


def events_of(client: httpx.Client, task_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The task's history from the API."""
    found: list[dict[str, Any]] = client.get(f"/v1/tasks/{task_id}/events", headers=headers).json()["events"]
    return found


def test_a_webhook_is_signed_retried_after_two_500s_and_recorded_delivered_once(
    live: Running, receiver: Receiver
) -> None:
    """A service token's default webhook gets the ended task's view, signed; the receiver's two
    500s are retried with the same webhook id; the history shows each attempt and one delivery."""
    service, token_id = token(live, "shop", "service", receiver.url("/flaky"))
    receiver.secrets.append(signing_secret(SERVER_SECRET, token_id))
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        submitted = client.post("/v1/tasks", json=payload(0, "photography"), headers=service)
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task_id"]

        def delivered() -> list[dict[str, Any]] | None:
            history = events_of(client, task_id, service)
            return history if any(e["type"] == "webhook.delivered" for e in history) else None

        history = eventually(delivered, timeout=60, what="webhook.delivered in the task's history")
        view = client.get(f"/v1/tasks/{task_id}", headers=service).json()
    hits = receiver.by_id("/flaky")[webhook_id(task_id)]
    assert [h.answered for h in hits] == [500, 500, 200]
    assert all(h.verified for h in hits), "every attempt carries a valid Standard Webhooks signature"
    # The task view as GET /v1/tasks/{id} shows it, but for the result link: a webhook names the
    # bearer route (it may be retried for longer than a signed link lives), the view a signed one.
    link = ("result_url", "result_url_expires_at", "result_url_expires_at_iso")
    assert view["result_url"].startswith(f"/v1/results/{task_id}?")
    for h in hits:
        assert {k: v for k, v in h.body.items() if k not in link} == {
            k: v for k, v in view.items() if k not in link
        }
        assert h.body["result_url"] == f"/v1/tasks/{task_id}/result"
    assert TaskViewOut.model_validate(hits[-1].body).status == "succeeded"
    hooks = [e for e in history if e["type"].startswith("webhook.")]
    assert [(e["type"], e["data"].get("code")) for e in hooks] == [
        ("webhook.attempted", 500),
        ("webhook.attempted", 500),
        ("webhook.attempted", 200),
        ("webhook.delivered", 200),
    ]
    assert {e["data"]["webhook_id"] for e in hooks} == {webhook_id(task_id)}
    assert hooks[0]["data"]["next_at"] > hooks[0]["data"]["at"]
    stream = [s.event for s in log_of(live.config) if getattr(s.event, "task_id", "") == task_id]
    assert sum(e.type == "webhook.delivered" for e in stream) == 1


def test_the_body_url_overrides_the_token_default(live: Running, receiver: Receiver) -> None:
    """A submit's own webhook_url is used instead of the token's default."""
    service, token_id = token(live, "shop2", "service", receiver.url("/default"))
    receiver.secrets.append(signing_secret(SERVER_SECRET, token_id))
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        body = {**payload(1, "photography"), "webhook_url": receiver.url("/override")}
        task_id = client.post("/v1/tasks", json=body, headers=service).json()["task_id"]
    eventually(lambda: receiver.by_id("/override").get(webhook_id(task_id)), timeout=60, what="webhook")
    assert webhook_id(task_id) not in receiver.by_id("/default")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://10.1.2.3/hook", "10.1.2.3, a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254, a link-local address"),
        ("http://[::1]:8080/hook", "::1, a loopback address"),
        ("ftp://example.com/hook", "must be an http or https URL"),
        ("http://user:pw@127.0.0.1/hook", "must not carry credentials"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_a_webhook_to_a_private_address_is_refused_at_submit(live: Running, url: str, words: str) -> None:
    """A webhook_url that is not http(s), or whose host resolves to a private, loopback (outside
    the allowed network) or link-local address, is a 422 naming the field; nothing is queued."""
    service, _ = token(live, "shop3", "service")
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        refused = client.post(
            "/v1/tasks", json={**payload(2, "photography"), "webhook_url": url}, headers=service
        )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert words in problem["detail"] and problem["errors"][0]["field"] == "webhook_url"
    assert not any(
        s.event.type == "task.submitted" and s.event.user_id == "shop3" for s in log_of(live.config)
    )


def test_a_user_token_may_not_name_a_webhook(live: Running, receiver: Receiver) -> None:
    """Webhooks are signed with a service token's secret: a user token naming one is a 403."""
    user, _ = token(live, "alice", "user")
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        body = {**payload(3, "photography"), "webhook_url": receiver.url("/flaky")}
        del body["user_id"]
        assert client.post("/v1/tasks", json=body, headers=user).status_code == 403


def test_token_create_prints_the_signing_secret_and_token_secret_repeats_it(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`genqueue token create --role service --webhook-url` stores the default URL and prints
    the whsec_ secret once on stderr; `genqueue token secret ID` shows the same one again."""
    monkeypatch.setenv("GENQUEUE_WEBHOOKS_SECRET", SERVER_SECRET.reveal())
    runner = CliRunner()
    ns = make_config(store_url, "unused").redis.namespace
    common = ["--redis-url", store_url, "--namespace", ns]
    made = runner.invoke(
        app,
        [
            "token",
            "create",
            "--user",
            "shop",
            "--role",
            "service",
            "--webhook-url",
            "https://a.example/h",
            *common,
        ],
    )
    assert made.exit_code == 0, made.output
    token_id = made.stderr.split("token ", 1)[1].split(" ", 1)[0]
    secret = made.stderr.strip().splitlines()[-1]
    assert secret == signing_secret(SERVER_SECRET, token_id) and secret.startswith("whsec_")
    assert secret not in made.stdout  # stdout holds only the token, for TOKEN=$(...)
    again = runner.invoke(app, ["token", "secret", token_id])
    assert again.exit_code == 0 and again.stdout.strip() == secret
    listed = runner.invoke(app, ["token", "list", *common])
    assert "https://a.example/h" in listed.stdout
    bad = runner.invoke(
        app, ["token", "create", "--user", "u", "--webhook-url", "https://a.example/h", *common]
    )
    assert bad.exit_code == 2  # a default webhook is for service tokens
