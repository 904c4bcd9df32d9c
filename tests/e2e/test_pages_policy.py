"""The pages and /docs in headless Chromium under their Content-Security-Policy, offline."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.config import Config
from serve_app.http.auth import new_token
from tests.helpers import append_to, make_config
from tests.served import served

CHROMIUM = os.environ.get("GENQUEUE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: the browser tests are skipped", allow_module_level=True)

from playwright.sync_api import Browser, Page, Route, expect, sync_playwright  # noqa: E402


class Offline:
    """A page on the app whose requests to any other origin are refused and recorded, with the
    console errors and uncaught exceptions it shows."""

    def __init__(self, browser: Browser, origin: str) -> None:
        self.origin = origin
        self.page: Page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route: Route) -> None:
        if route.request.url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort()


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, str]]:
    """The app under uvicorn in a thread, with no actors: the pages need only load, run their
    scripts and read the API."""
    config = make_config(store_url, str(tmp_path_factory.mktemp("policy")), auth=True, slots=4)
    with served(config) as running:
        yield config, running.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def test_the_docs_render_offline_under_their_policy(app: tuple[Config, str], browser: Browser) -> None:
    """Swagger UI draws the API's operations from files the app serves, asks no other origin
    for anything, and breaks no rule of its policy."""
    _, origin = app
    tab = Offline(browser, origin)
    tab.page.goto(f"{origin}/docs")
    expect(tab.page.locator(".swagger-ui .info .title")).to_contain_text("genqueue", timeout=20_000)
    expect(tab.page.locator(".opblock-summary-path", has_text="/v1/tasks/{task_id}/watch")).to_be_visible()
    assert tab.refused == [] and tab.errors == [], (tab.refused, tab.errors)
    tab.page.close()


def test_the_pages_run_their_scripts_and_styles_under_their_policy(
    app: tuple[Config, str], browser: Browser
) -> None:
    """The user page and the ops page load their scripts and styles, read the API and paint the
    chart's legend with no violation of their policy and nothing asked of another origin."""
    config, origin = app
    secret, event = new_token("ops", "admin")
    append_to(config, [event])
    user = Offline(browser, origin)
    user.page.goto(f"{origin}/")
    user.page.select_option("#kind", "fitting")  # app.js shows the garment picker
    expect(user.page.locator("#garment-box")).to_be_visible()
    ops = Offline(browser, origin)
    ops.page.goto(f"{origin}/ops")
    ops.page.fill("#token", secret)
    ops.page.locator("#token").dispatch_event("change")
    expect(ops.page.locator("#slots")).to_have_text("4")  # ops.js read /v1/queue
    colour = "getComputedStyle(document.querySelector('.swatch-waiting')).color"
    assert ops.page.evaluate(colour) == "rgb(47, 91, 234)"
    for tab in (user, ops):
        assert tab.refused == [] and tab.errors == [], (tab.refused, tab.errors)
        tab.page.close()
