"""The ops page in headless Chromium against the HTTP app on a real Valkey (no actors: submitted
tasks stay queued; a failure and a spent pool window are appended as the actors write them)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from actors.config import CreditsConfig
from events.catalogue import CreditsGranted, CreditsRefunded, KeyTokenGranted, TaskExpired, TaskFailed
from serve_app.cli.burst import payload
from tests.helpers import append_to, make_config
from tests.served import App, served

CHROMIUM = os.environ.get("GENQUEUE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: the browser tests are skipped", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

BODY = {k: v for k, v in payload(0, "photography").items() if k != "user_id"}
WINDOW = 60.0


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """One pool of 60 calls a minute, so that a test can spend its window."""
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("ops-page")),
        auth=True,
        credits=CreditsConfig(photography=1),
        pools=(("p1", 60, WINDOW),),
    )
    with served(config) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def submit(client: httpx.Client, headers: dict[str, str]) -> str:
    r = client.post("/v1/tasks", json=BODY, headers=headers)
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def ops_page(browser: Browser, app: App, admin: dict[str, str]) -> tuple[Page, list[str]]:
    """The ops page signed in with the admin token, and the policy violations it reports."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{app.url}/ops")
    page.fill("#token", admin["Authorization"].removeprefix("Bearer "))
    page.locator("#token").dispatch_event("change")
    return page, violations


def test_the_table_filters_by_status_and_user_and_a_click_shows_the_timeline_and_retries(
    app: App, browser: Browser
) -> None:
    """Failed tasks by the status filter, one user's by the user filter; a click on a failed task
    shows its events in order and a Retry button that queues a new task; no policy violation."""
    admin, hana, ivan = app.token("ops", "admin"), app.token("hana", "user"), app.token("ivan", "user")
    append_to(
        app.config,
        [CreditsGranted(user_id=u, amount=10, by="test", at=time.time()) for u in ("hana", "ivan")],
    )
    with httpx.Client(base_url=app.url, timeout=30) as client:
        hers = [submit(client, hana) for _ in range(3)]
        submit(client, ivan)
    now = time.time()
    failure = TaskFailed(task_id=hers[0], attempt=1, error="upstream said no", at=now)
    append_to(
        app.config, [failure, CreditsRefunded(user_id="hana", task_id=hers[0], amount=1, reason="x", at=now)]
    )
    page, violations = ops_page(browser, app, admin)
    page.fill("#filter-user", "hana")
    page.click("#filter")
    expect(page.locator("#tasks tbody tr")).to_have_count(3)
    expect(page.locator("#tasks tbody")).not_to_contain_text("ivan")
    page.select_option("#filter-status", "failed")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(hers[0][:8])
    rows.first.click()
    expect(page.locator("#timeline-task")).to_have_text(hers[0])
    events = page.locator("#timeline tbody tr td:nth-child(2)")
    expect(events).to_have_text(["task.submitted", "credits.charged", "task.failed", "credits.refunded"])
    expect(page.locator("#cancel")).to_be_hidden()
    page.click("#retry")
    expect(page.locator("#action")).to_contain_text(f"A retry of {hers[0][:8]}")
    new_id = page.locator("#timeline-task").text_content() or ""
    assert new_id != hers[0] and len(new_id) == 32
    expect(page.locator("#timeline-status")).to_contain_text("queued")
    page.select_option("#filter-status", "queued")
    expect(page.locator("#tasks tbody tr").first).to_contain_text(new_id[:8])
    expect(page.locator("#tasks tbody tr")).to_have_count(3)  # hana's two queued and the retry
    assert violations == []
    page.close()


def test_pause_and_resume_buttons_switch_intake_and_the_banner_names_when_the_pools_free(
    app: App, browser: Browser
) -> None:
    """Pause makes a submit a 503 and the page says intake is paused; Resume accepts it again.
    With the only pool's window spent and tasks waiting, the page says until when; the charts
    show the waiting count."""
    admin, jon = app.token("ops", "admin"), app.token("jon", "user")
    append_to(app.config, [CreditsGranted(user_id="jon", amount=10, by="test", at=time.time())])
    page, violations = ops_page(browser, app, admin)
    expect(page.locator("#intake")).to_have_text("Open: new tasks are accepted.")
    page.fill("#pause-reason", "rotating keys")
    page.click("#pause")
    expect(page.locator("#intake")).to_contain_text("Paused since")
    expect(page.locator("#intake")).to_contain_text("rotating keys")
    expect(page.locator("#resume")).to_be_visible()
    with httpx.Client(base_url=app.url, timeout=30) as client:
        refused = client.post("/v1/tasks", json=BODY, headers=jon)
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        page.click("#resume")
        expect(page.locator("#intake")).to_have_text("Open: new tasks are accepted.")
        submit(client, jon)
    now = time.time()
    grants = [
        KeyTokenGranted(
            pool="p1", key_id="k0", task_id=f"{i:032x}", attempt=1, capacity=60, window=WINDOW, at=now
        )
        for i in range(60)
    ]
    append_to(app.config, grants)
    expect(page.locator("#spent")).to_contain_text("Pools spent until", timeout=10_000)
    expect(page.locator("#spent")).to_contain_text("no task can start before then")
    waiting = page.locator("#waiting").text_content() or "0"
    assert int(waiting) >= 1
    expect(page.locator("#chart-waiting-now")).to_have_text(waiting)
    assert violations == []
    page.close()


def test_expired_tasks_are_counted_and_filtered(app: App, browser: Browser) -> None:
    """A task that expired (as the queue writes it: the ending and its refund in one append) is
    counted in /v1/queue and on the page, and is the one row the `expired` filter shows."""
    admin, kim = app.token("ops", "admin"), app.token("kim", "user")
    append_to(app.config, [CreditsGranted(user_id="kim", amount=10, by="test", at=time.time())])
    with httpx.Client(base_url=app.url, timeout=30) as client:
        before = client.get("/v1/queue", headers=admin).json()["expired"]
        late, other = submit(client, kim), submit(client, kim)
        now = time.time()
        ended = TaskExpired(task_id=late, attempt=0, deadline=now - 1, at=now)
        append_to(
            app.config,
            [ended, CreditsRefunded(user_id="kim", task_id=late, amount=1, reason="expired", at=now)],
        )
        assert client.get("/v1/queue", headers=admin).json()["expired"] == before + 1
        listed = client.get("/v1/tasks", params={"status": "expired"}, headers=kim).json()["tasks"]
        assert [t["task_id"] for t in listed] == [late] and other != late
    page, violations = ops_page(browser, app, admin)
    expect(page.locator("#expired")).to_have_text(str(before + 1))
    page.fill("#filter-user", "kim")
    page.select_option("#filter-status", "expired")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(late[:8])
    expect(rows.first).to_contain_text("expired")
    assert violations == []
    page.close()
