"""Result links over HTTP on a real Valkey: a succeeded task's view carries a signed, expiring
`result_url` that serves its image without a token (cacheable, with an ETag); an altered or
expired link is a 403 problem, a result past its retention a 410; the key that signs them.

The app runs under uvicorn in a thread with no actors (tests/served.py); a succeeded task is
its events appended to the store and its image written to blob storage, as a worker leaves them.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from actors.blobs import blob_store, task_blob
from actors.config import ConfigError, Secret, parse
from events.catalogue import BlobsExpired, TaskDispatched, TaskStarted, TaskSucceeded
from serve_app.http.results import KEY_FILE, Links, link_key
from tests.helpers import append_to, make_config, submitted
from tests.served import App, served

CHROMIUM = os.environ.get("GENQUEUE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SIZE = (12, 9)


def png() -> bytes:
    """A small PNG, as a result."""
    out = io.BytesIO()
    Image.new("RGB", SIZE, (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app with tokens required, for this module."""
    config = make_config(store_url, str(tmp_path_factory.mktemp("links")), auth=True)
    with served(config) as running:
        yield running


def succeeded(app: App, user: str = "alice") -> str:
    """A task of `user` that succeeded with `png()` as its result; its id."""
    task = submitted(at=time.time(), user=user)
    t, now = task.task_id, time.time()
    ref = blob_store(app.config).put(task_blob(t, "result-1.png"), png())
    append_to(
        app.config,
        [
            task,
            TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=now + 60, at=now),
            TaskStarted(task_id=t, attempt=1, pool="p1", key_id="p1#1", at=now),
            TaskSucceeded(task_id=t, attempt=1, result=ref, mime_type="image/png", elapsed=0.1, at=now),
        ],
    )
    return t


def view_of(app: App, task_id: str, user: str = "alice") -> dict[str, object]:
    """The task as `GET /v1/tasks/{id}` shows it to `user`."""
    answer = httpx.get(f"{app.url}/v1/tasks/{task_id}", headers=app.token(user, "user"), timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def problem(answer: httpx.Response, status: int, slug: str) -> str:
    """The problem's detail, after checking its status and type."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"] == f"/problems/{slug}"
    detail: str = answer.json()["detail"]
    return detail


def test_the_link_serves_the_image_without_a_token(app: App) -> None:
    """The view's link loads the PNG with no Authorization, privately cacheable until it expires,
    with an ETag that a revalidation answers 304; a second read soon gives the same link."""
    task_id = succeeded(app)
    view = view_of(app, task_id)
    link, expires = str(view["result_url"]), int(str(view["result_url_expires_at"]))
    assert link.startswith(f"/v1/results/{task_id}?expires={expires}&sig=")
    assert 3600 * 3 / 4 - 5 <= expires - time.time() <= 3600
    assert str(view["result_url_expires_at_iso"]).endswith("Z")
    with httpx.Client(base_url=app.url, timeout=30) as anonymous:
        image = anonymous.get(link)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content == png() and Image.open(io.BytesIO(image.content)).size == SIZE
        max_age = int(image.headers["cache-control"].removeprefix("private, max-age="))
        assert abs(max_age - (expires - time.time())) <= 5
        again = anonymous.get(link, headers={"If-None-Match": image.headers["etag"]})
        assert again.status_code == 304 and not again.content
        assert anonymous.get(f"/v1/tasks/{task_id}/result").status_code == 401  # the bearer route stays
    assert view_of(app, task_id)["result_url"] == link


def test_an_altered_or_expired_link_is_refused(app: App) -> None:
    """A changed signature, another task's id under this signature, a later expiry, or a link
    signed right but past its time: each a 403 invalid-result-link, the image never sent."""
    task_id, other = succeeded(app), succeeded(app)
    link = str(view_of(app, task_id)["result_url"])
    query = parse_qs(urlsplit(link).query)
    sig, expires = query["sig"][0], int(query["expires"][0])
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    past = int(time.time() - 10)
    signed = Links(link_key(app.config), 3600).signature(task_id, past)
    expired = f"/v1/results/{task_id}?expires={past}&sig={signed}"
    with httpx.Client(base_url=app.url, timeout=30) as anonymous:
        for altered in (
            f"/v1/results/{task_id}?expires={expires}&sig={flipped}",
            f"/v1/results/{other}?expires={expires}&sig={sig}",
            f"/v1/results/{task_id}?expires={expires + 3600}&sig={sig}",
            f"/v1/results/{task_id}?expires={expires}&sig={sig}é",
        ):
            assert "does not match" in problem(anonymous.get(altered), 403, "invalid-result-link")
        assert "expired" in problem(anonymous.get(expired), 403, "invalid-result-link")
        assert anonymous.get(link).status_code == 200


def test_no_link_before_success_or_after_retention(app: App) -> None:
    """A queued task has no link; once its blobs expired the view has none and an older link is a
    410 gone; a task that never was, under a valid signature, is a 404."""
    waiting = submitted(at=time.time(), user="alice")
    append_to(app.config, [waiting])
    assert view_of(app, waiting.task_id)["result_url"] is None
    task_id = succeeded(app)
    link = str(view_of(app, task_id)["result_url"])
    append_to(app.config, [BlobsExpired(task_id=task_id, refs=[], retention_seconds=1, at=time.time())])
    shown = view_of(app, task_id)
    assert shown["result_url"] is None and shown["result_url_expires_at"] is None
    missing = uuid.uuid4().hex
    made_up = Links(link_key(app.config), 3600).link(missing, time.time())[0]
    with httpx.Client(base_url=app.url, timeout=30) as anonymous:
        assert "no longer stored" in problem(anonymous.get(link), 410, "gone")
        problem(anonymous.get(made_up), 404, "not-found")


def test_the_key_is_configured_or_kept_owner_only(tmp_path: Path) -> None:
    """Without `[storage] link_secret` a key is made once in the data directory, mode 0600, and
    read back alike; a configured one (literal or env:VAR) wins; a short one is refused, and
    neither shows in the config's repr."""
    config = make_config("redis://127.0.0.1:1/0", str(tmp_path / "data"))
    made = link_key(config)
    assert stat.S_IMODE((tmp_path / "data" / KEY_FILE).stat().st_mode) == 0o600
    assert link_key(config) == made and len(made.reveal()) == 64
    assert os.listdir(tmp_path / "data") == [KEY_FILE]  # the draft is gone
    (tmp_path / "data" / KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        link_key(config)
    secret = "s" * 40
    loaded = parse({"storage": {"link_secret": "env:LINKS", "link_seconds": 60}}, {"LINKS": secret})
    assert loaded.storage.link_secret == Secret(secret) and loaded.storage.link_seconds == 60
    assert secret not in repr(loaded)
    assert link_key(replace(config, storage=loaded.storage)).reveal() == secret
    for bad in ({"link_secret": "short"}, {"link_seconds": 0}, {"link_seconds": 8 * 86_400}):
        with pytest.raises(ConfigError, match=r"\[storage\]"):
            parse({"storage": bad}, {})


def test_an_img_element_loads_the_link(app: App) -> None:
    """In Chromium, a page on another origin shows the image from the link: naturalWidth > 0."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    link = str(view_of(app, succeeded(app))["result_url"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_content(f'<img id="result" src="{app.url}{link}">')
            page.wait_for_function("document.getElementById('result').complete", timeout=15_000)
            width = page.evaluate("document.getElementById('result').naturalWidth")
        finally:
            browser.close()
    assert width == SIZE[0]
