"""The worked example (examples/photo-app) end to end: a live genqueue (Ray Serve, the actors,
embedded Valkey, the offline provider) with completion webhooks on, and the example's backend
served by uvicorn on 127.0.0.1 holding a service token scoped to `photoapp:*`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from standardwebhooks import Webhook

from actors.config import Secret
from actors.providers.images import sample_selfie
from actors.webhooks.rules import signing_secret, webhook_id
from events.catalogue import CreditsGranted
from serve_app.http.auth import new_token
from serve_app.runtime import Running
from tests.conftest import free_port
from tests.helpers import append_to, eventually

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "photo-app"
# The demo users the cases log in as, each granted 5 credits.
USERS = ("alice", "bob")
SERVER_SECRET = Secret("a test server secret for the photo app's webhooks")
CHROMIUM = os.environ.get("GENQUEUE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def example_backend() -> ModuleType:
    """examples/photo-app/backend.py as a module (it imports app_store.py from beside it)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        spec = importlib.util.spec_from_file_location("photo_app_backend", EXAMPLE / "backend.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLE))


@dataclass(frozen=True)
class PhotoApp:
    """The example's backend, served: its URL, its records, its signing secret, and a service
    token's headers and genqueue's URL for reading genqueue directly."""

    url: str
    store: Any
    whsec: str
    service: dict[str, str]
    genqueue: str

    def login(self, user: str) -> dict[str, str]:
        """The Authorization header of a demo session of `user`."""
        answer = httpx.post(f"{self.url}/api/login", json={"user": user}, timeout=10)
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}


@pytest.fixture(scope="module")
def photo_app(live: Running, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhotoApp]:
    """The example's backend on a free port, as its README runs it, with a new service token."""
    token, event = new_token("photo-app", "service", users=["photoapp:*"])
    grants = [CreditsGranted(user_id=f"photoapp:{u}", amount=5, by="test", at=time.time()) for u in USERS]
    append_to(live.config, [event, *grants])
    whsec = signing_secret(SERVER_SECRET, event.token_id)
    backend = example_backend()
    port = free_port()
    settings = backend.Settings(
        genqueue_token=token,
        webhook_secret=whsec,
        genqueue_url=live.api_url,
        public_url=f"http://127.0.0.1:{port}",
        db_path=str(tmp_path_factory.mktemp("photo-app") / "photo-app.sqlite3"),
    )
    app = backend.create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, timeout=30, what="the photo app started")
    try:
        service = {"Authorization": f"Bearer {token}"}
        yield PhotoApp(f"http://127.0.0.1:{port}", app.state.store, whsec, service, live.api_url)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def generate(app: PhotoApp, session: dict[str, str], key: str, seed: int = 1) -> httpx.Response:
    """Upload a selfie to the app as the session's user."""
    return httpx.post(
        f"{app.url}/api/generate",
        files={"photo": ("me.png", sample_selfie(seed), "image/png")},
        data={"style": "film"},
        headers={**session, "Idempotency-Key": key},
        timeout=30,
    )


def webhook_recorded(app: PhotoApp, session: dict[str, str], task_id: str) -> dict[str, Any] | None:
    """The app's view of the task once its completion webhook was recorded; None before."""
    seen: dict[str, Any] = httpx.get(f"{app.url}/api/tasks/{task_id}", headers=session, timeout=10).json()
    return seen if seen.get("webhook") else None


@pytest.fixture(scope="module")
def finished(photo_app: PhotoApp) -> tuple[str, dict[str, Any]]:
    """alice's task, submitted through the app (twice under one key), once the app has received
    and verified its completion webhook: its id and the app's view of it."""
    alice = photo_app.login("alice")
    first = generate(photo_app, alice, "press-1")
    assert first.status_code == 202, first.text
    again = generate(photo_app, alice, "press-1")
    assert again.status_code == 202, again.text
    task_id = first.json()["task_id"]
    assert again.json()["task_id"] == task_id and again.json()["replayed"] is True
    seen = eventually(lambda: webhook_recorded(photo_app, alice, task_id), timeout=60, what="the webhook")
    assert seen is not None
    return task_id, seen


def test_a_submit_for_a_user_ends_in_a_verified_webhook_and_a_reachable_result(
    live: Running, photo_app: PhotoApp, finished: tuple[str, dict[str, Any]]
) -> None:
    """The app submits for `photoapp:alice` with its webhook URL; genqueue's signed webhook is
    verified and recorded once, genqueue records it delivered once, the result link works
    without a token, and the press repeated under one key was charged once."""
    task_id, seen = finished
    assert seen["task"]["status"] == "succeeded" and seen["task"]["user_id"] == "photoapp:alice"
    assert seen["webhook"]["status"] == "succeeded" and seen["webhook"]["webhook_id"] == webhook_id(task_id)
    assert photo_app.store.webhooks_received(task_id) == 1
    image = httpx.get(seen["task"]["result_url"], timeout=10)  # no token: the signed link alone
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/")
    assert image.content[:8] == b"\x89PNG\r\n\x1a\n"
    with httpx.Client(base_url=live.api_url, headers=photo_app.service, timeout=10) as genqueue:
        history = genqueue.get(f"/v1/tasks/{task_id}/events").json()["events"]
        me = genqueue.get("/v1/me", params={"user_id": "photoapp:alice"}).json()
    delivered = [e for e in history if e["type"] == "webhook.delivered"]
    assert [e["data"]["code"] for e in delivered] == [200]
    assert me["balance"] == 4, me  # 5 granted, one charge for the two presses


def test_a_forged_webhook_is_rejected_and_a_repeat_is_dropped(
    photo_app: PhotoApp, finished: tuple[str, dict[str, Any]]
) -> None:
    """A webhook signed with another secret, an altered body, a stale timestamp or no signature
    is a 401 problem and records nothing; a genuine repeat (the same webhook id) is answered 200
    and recorded once."""
    task_id, _ = finished
    body = f'{{"task_id": "{task_id}", "status": "failed"}}'
    msg = webhook_id(task_id)

    def post(secret: str, signed: str, sent: str, at: datetime | None = None) -> httpx.Response:
        stamp = at or datetime.now(UTC)
        headers = {
            "webhook-id": msg,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg, stamp, signed),
            "content-type": "application/json",
        }
        return httpx.post(f"{photo_app.url}/webhooks/genqueue", content=sent, headers=headers, timeout=10)

    other = signing_secret(Secret("another server's secret"), "tok")
    stale = datetime.fromtimestamp(time.time() - 600, UTC)
    refused = [
        post(other, body, body),
        post(photo_app.whsec, body, body.replace("failed", "succeeded")),
        post(photo_app.whsec, body, body, at=stale),
        httpx.post(f"{photo_app.url}/webhooks/genqueue", content=body, timeout=10),
    ]
    for answer in refused:
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert "does not verify" in answer.json()["detail"]
    repeat = post(photo_app.whsec, body, body)
    assert repeat.status_code == 200 and repeat.json() == {"received": True, "duplicate": True}
    assert photo_app.store.webhooks_received(task_id) == 1
    assert photo_app.store.webhook_of(task_id)["status"] == "succeeded"  # not the forged "failed"


def test_another_user_cannot_read_the_task_and_its_owner_can_watch_it(
    photo_app: PhotoApp, finished: tuple[str, dict[str, Any]]
) -> None:
    """bob gets a 404 for alice's task on every route, no session a 401; alice's watch, relayed
    from genqueue for the TypeScript client, streams the task to its end."""
    task_id, _ = finished
    bob = photo_app.login("bob")
    routes = [f"/api/tasks/{task_id}", f"/genqueue/v1/tasks/{task_id}", f"/genqueue/v1/tasks/{task_id}/watch"]
    with httpx.Client(base_url=photo_app.url, timeout=10) as app:
        for route in routes:
            assert app.get(route, headers=bob).status_code == 404, route
            assert app.get(route).status_code == 401, route
        with app.stream("GET", routes[2], headers=photo_app.login("alice")) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            relayed = stream.read().decode()  # the stream ends after the terminal view
    assert '"status":"succeeded"' in relayed.replace(" ", "")


def test_a_photo_genqueue_cannot_read_comes_back_as_its_problem(photo_app: PhotoApp) -> None:
    """genqueue's 422 for an unreadable upload reaches the page as genqueue's problem (its type
    made absolute); an upload without a session is a 401 and never reaches genqueue."""
    upload = {"photo": ("me.png", b"not an image", "image/png")}
    with httpx.Client(base_url=photo_app.url, timeout=30) as app:
        refused = app.post("/api/generate", files=upload, headers=photo_app.login("alice"))
        anonymous = app.post("/api/generate", files=upload)
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["errors"][0]["field"] == "images.person"
    assert problem["type"] == f"{photo_app.genqueue}/problems/unprocessable-content"
    assert anonymous.status_code == 401 and "log in first" in anonymous.json()["detail"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_page_follows_a_task_to_succeeded_with_the_typescript_client(photo_app: PhotoApp) -> None:
    """In Chromium: log in as bob, upload a selfie; the page (the TypeScript client over the
    app's relay) shows "succeeded", the image from its signed link, and the webhook received."""
    from playwright.sync_api import expect, sync_playwright

    selfie = ("me.png", "image/png", sample_selfie(7))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(photo_app.url)
            page.select_option("#user", "bob")
            page.click("#login-button")
            page.set_input_files("#photo", {"name": selfie[0], "mimeType": selfie[1], "buffer": selfie[2]})
            page.click("#go")
            expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
            expect(page.locator("#result")).to_be_visible()
            page.wait_for_function("document.getElementById('result').naturalWidth > 0", timeout=10_000)
            webhook = page.locator("#webhook")
            expect(webhook).to_contain_text("received genqueue's signed webhook", timeout=30_000)
            assert errors == []
        finally:
            browser.close()
