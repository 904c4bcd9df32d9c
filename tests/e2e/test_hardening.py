"""Stream caps and revocation, metrics and scoped tokens, security headers, redirects, /docs, over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from actors.config import Config, CreditsConfig
from events.catalogue import TokenCreated, TokenRevoked
from events.redis_store import RedisEventStore
from serve_app.cli.burst import payload
from serve_app.http.auth import new_token
from serve_app.http.watch import Hub
from tests.helpers import append_to, eventually, make_config
from tests.served import served

USER_STREAMS, SERVICE_STREAMS = 2, 3


class App:
    """A served app and tokens on it."""

    def __init__(self, config: Config, url: str) -> None:
        self.config, self.url = config, url

    def token(self, user: str, role: str, users: tuple[str, ...] = ()) -> dict[str, str]:
        """Authorization headers of a new token."""
        return {"Authorization": f"Bearer {self.made(user, role, users)[0]}"}

    def made(self, user: str, role: str, users: tuple[str, ...] = ()) -> tuple[str, TokenCreated]:
        """A new token, stored, and the event that made it."""
        secret, event = new_token(user, role, users=users)
        append_to(self.config, [event])
        return secret, event


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app under uvicorn in a thread on a real Valkey, with no actors: submitted tasks stay
    waiting, so their streams stay open until a test closes them."""
    base = make_config(
        store_url,
        str(tmp_path_factory.mktemp("hardening")),
        auth=True,
        credits=CreditsConfig(default_grant=100),
    )
    limits = replace(
        base.limits, max_streams_per_token=USER_STREAMS, max_streams_per_service_token=SERVICE_STREAMS
    )
    config = replace(base, limits=limits)
    with served(config) as running:
        yield App(config, running.url)


def submit(client: httpx.Client, headers: dict[str, str], user: str | None = None) -> str:
    """A waiting task's id."""
    body = payload(0, "photography")
    if user is None:
        del body["user_id"]
    else:
        body["user_id"] = user
    r = client.post("/v1/tasks", json=body, headers=headers)
    assert r.status_code == 202, r.text
    task_id: str = r.json()["task_id"]
    return task_id


def first_view(lines: Iterator[str]) -> dict[str, Any]:
    """The first task view a stream sends."""
    for line in lines:
        if line.startswith("data:"):
            view: dict[str, Any] = json.loads(line[5:])
            return view
    raise AssertionError("the stream ended before its first view")


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def try_stream(client: httpx.Client, path: str, headers: dict[str, str]) -> httpx.Response:
    """The answer to opening a watch stream, closed again (its body read unless it is a stream)."""
    with client.stream("GET", path, headers=headers) as r:
        if r.status_code != 200:
            r.read()
        return r


def test_a_token_holds_at_most_its_streams_and_gets_one_back_when_one_closes(app: App) -> None:
    """A user token's third stream is a 429 with Retry-After while two are open, other tokens are
    not held back, and closing one stream lets the token open another."""
    alice, bob = app.token("alice", "user"), app.token("bob", "user")
    with httpx.Client(base_url=app.url, timeout=30) as client, contextlib.ExitStack() as open_streams:
        task = submit(client, alice)
        watch = f"/v1/tasks/{task}/watch"
        held = []
        for _ in range(USER_STREAMS):
            r = open_streams.enter_context(client.stream("GET", watch, headers=alice))
            assert r.status_code == 200
            # Kept: an iterator dropped half-way closes its connection, and so the stream.
            lines = r.iter_lines()
            assert first_view(lines)["status"] == "queued"
            held.append((r, lines))
        refused = try_stream(client, watch, alice)
        assert refused.status_code == 429
        problem = is_problem(refused, 429)
        assert refused.headers["retry-after"] == str(problem["retry_after"]) and problem["streams"] == 2
        assert try_stream(client, f"/v1/tasks/{submit(client, bob)}/watch", bob).status_code == 200
        held[0][0].close()
        eventually(
            lambda: try_stream(client, watch, alice).status_code == 200, timeout=10, what="a stream freed"
        )


def test_a_revoked_tokens_open_stream_ends(app: App) -> None:
    """An open stream ends within seconds of its token's revocation, and the token opens no other."""
    secret, made = app.made("shop", "service")
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=app.url, timeout=httpx.Timeout(30, read=10)) as client:
        watch = f"/v1/tasks/{submit(client, headers, 'buyer-1')}/watch"
        with client.stream("GET", watch, headers=headers) as r:
            lines = r.iter_lines()
            assert first_view(lines)["status"] == "queued"
            append_to(app.config, [TokenRevoked(token_id=made.token_id, digest=made.digest, at=time.time())])
            began = time.monotonic()
            for _ in lines:  # to the stream's end; a read timeout fails the test
                pass
            ended = time.monotonic() - began
        print(f"stream ended {ended:.2f} s after the revocation")
        assert ended < 5  # the hub saw the revocation: not the periodic check, nor a timeout
        is_problem(client.get(watch, headers=headers), 401)


def test_the_hub_ends_streams_of_a_token_revoked_before_it_started(app: App) -> None:
    """A token revoked before the hub's tailer started (so it never sees the event) has its
    streams ended by the hub's periodic token check; a live token's stream carries on."""
    _, live = app.made("shop-live", "service")
    _, gone = app.made("shop-gone", "service")
    append_to(app.config, [TokenRevoked(token_id=gone.token_id, digest=gone.digest, at=time.time())])

    async def check() -> tuple[bool, bool]:
        store = RedisEventStore.from_url(app.config.redis.url, app.config.redis.namespace)
        hub = Hub(store, token_check_seconds=0.0)
        try:
            with hub.watch("t-live", live.token_id) as kept, hub.watch("t-gone", gone.token_id) as ended:
                await asyncio.wait_for(ended.wake.wait(), 10)
                return kept.revoked, ended.revoked
        finally:
            await hub.close()
            await store.close()

    assert asyncio.run(check()) == (False, True)


def test_only_a_metrics_or_admin_token_reads_metrics_and_a_metrics_token_nothing_else(app: App) -> None:
    """GET /metrics takes a metrics or admin token and refuses users and services; a metrics
    token is a 403 on every other route."""
    scrape, admin = app.token("prometheus", "metrics"), app.token("root", "admin")
    user, service = app.token("carol", "user"), app.token("shop", "service")
    with httpx.Client(base_url=app.url, timeout=30) as client:
        task = submit(client, user)
        for headers in (scrape, admin):
            r = client.get("/metrics", headers=headers)
            assert r.status_code == 200 and "genqueue_waiting_tasks" in r.text
        for headers in (user, service):
            is_problem(client.get("/metrics", headers=headers), 403)
        is_problem(client.get("/metrics"), 401)
        for method, path in (
            ("GET", "/v1/me"),
            ("GET", "/v1/queue"),
            ("GET", f"/v1/tasks/{task}"),
            ("GET", f"/v1/tasks/{task}/watch"),
            ("DELETE", f"/v1/tasks/{task}"),
        ):
            is_problem(client.request(method, path, headers=scrape), 403)
        body = {**payload(0, "photography"), "user_id": "carol"}
        is_problem(client.post("/v1/tasks", json=body, headers=scrape), 403)


def test_a_scoped_service_token_acts_only_for_its_users(app: App) -> None:
    """A service token scoped to `app1:*` and `vip` submits, reads and asks balances for those
    users, and gets a 403 problem for any other, itself included."""
    scoped = app.token("shop", "service", users=("app1:*", "vip"))
    other = app.token("shop", "service")
    with httpx.Client(base_url=app.url, timeout=30) as client:
        mine = [submit(client, scoped, user) for user in ("app1:alice", "vip")]
        for user in ("bob", "app10", "vip2"):
            body = {**payload(0, "photography"), "user_id": user}
            is_problem(client.post("/v1/tasks", json=body, headers=scoped), 403)
        no_user = payload(0, "photography")
        del no_user["user_id"]
        is_problem(client.post("/v1/tasks", json=no_user, headers=scoped), 403)  # "shop" is outside
        assert client.get("/v1/me", params={"user_id": "app1:alice"}, headers=scoped).json()["balance"] == 99
        is_problem(client.get("/v1/me", params={"user_id": "bob"}, headers=scoped), 403)
        for task in mine:
            assert client.get(f"/v1/tasks/{task}", headers=scoped).status_code == 200
        theirs = submit(client, other, "bob")
        for path in (f"/v1/tasks/{theirs}", f"/v1/tasks/{theirs}/events", f"/v1/tasks/{theirs}/watch"):
            is_problem(client.get(path, headers=scoped), 403)
        is_problem(client.delete(f"/v1/tasks/{theirs}", headers=scoped), 403)
        assert client.get(f"/v1/tasks/{theirs}", headers=other).status_code == 200


def test_every_response_says_nosniff_and_the_pages_carry_a_strict_policy(app: App) -> None:
    """nosniff on pages, static files, API answers and problems; the pages' policy allows only
    their own scripts and styles (no 'unsafe-inline') and no framing, and they hold no inline
    script or style for it to block."""
    with httpx.Client(base_url=app.url, timeout=30) as client:
        responses = {
            path: client.get(path)
            for path in ("/", "/ops", "/docs", "/static/app.js", "/static/style.css", "/healthz", "/v1/me")
        }
        for path, r in responses.items():
            assert r.headers["x-content-type-options"] == "nosniff", path
            policy = r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy, path
        for path in ("/", "/ops"):
            assert "unsafe-inline" not in responses[path].headers["content-security-policy"]
            html = responses[path].text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
            assert not re.search(r"\sstyle=|<style", html), path


def test_a_trailing_slash_never_redirects_to_the_host_header(app: App) -> None:
    """A path with or without a stray slash is answered as written (a 404 problem), never with a
    redirect built from a Host header the client chose."""
    admin = app.token("root", "admin")
    with httpx.Client(base_url=app.url, timeout=30, follow_redirects=False) as client:
        for path in ("/v1/queue/", "/ops/", "/static", "/docs/"):
            r = client.get(path, headers={**admin, "Host": "evil.example"})
            assert "location" not in r.headers, (path, r.headers.get("location"))
            is_problem(r, 404)


def test_the_docs_need_nothing_from_the_network(app: App) -> None:
    """/docs names no external URL, every script and stylesheet it loads is served by the app,
    the schema it shows is there, and no CDN-only ReDoc page is left."""
    with httpx.Client(base_url=app.url, timeout=30) as client:
        docs = client.get("/docs")
        assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
        assert not re.search(r"(https?:)?//", docs.text), docs.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
        for asset in assets:
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 100, asset
        assert client.get("/openapi.json").json()["info"]["title"] == "genqueue"
        assert client.get("/redoc").status_code == 404
