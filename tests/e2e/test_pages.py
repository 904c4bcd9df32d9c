"""The user page and the ops page in a real browser: Playwright driving Debian's Chromium
(headless) against a live genqueue (Ray Serve, actors, embedded Valkey, offline provider)."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.config import CreditsConfig
from actors.providers.images import sample_selfie
from events.catalogue import CreditsGranted
from serve_app.cli.burst import payload
from serve_app.http.auth import new_token
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.helpers import append_to, make_config, run_async

CHROMIUM = os.environ.get("GENQUEUE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: the browser tests are skipped", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

# Where screenshots go: a temporary folder, or GENQUEUE_SCREENSHOTS (the README's come from there).
SHOTS = os.environ.get("GENQUEUE_SCREENSHOTS")
AHEAD = 100


@pytest.fixture(scope="module")
def live(ray_session: None, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("pages")),
        slots=4,
        latency=0.15,
        pools=(("project-a", 300, 1.0), ("project-b", 300, 1.0)),
        port=free_port(),
        auth=True,
        credits=CreditsConfig(photography=1, fitting=2),
    )
    with running(config, dashboard=False) as r:
        yield r


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def token(live: Running, user: str, role: str, credits: int = 0) -> str:
    secret, event = new_token(user, role)
    grants = [CreditsGranted(user_id=user, amount=credits, by="test", at=time.time())] if credits else []
    append_to(live.config, [event, *grants])
    return secret


def shot(page: Page, tmp_path: Path, name: str) -> Path:
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    return target


def preload(live: Running, n: int, prefix: str) -> None:
    """n tasks of n other users ahead in the queue, submitted at once (one user each, so the
    page's task waits behind all of them in the same turn)."""
    service = token(live, "shop", "service")
    users = [f"{prefix}-{i}" for i in range(n)]
    append_to(live.config, [CreditsGranted(user_id=u, amount=1, by="test", at=time.time()) for u in users])

    async def burst() -> None:
        async with httpx.AsyncClient(base_url=live.api_url, timeout=60) as client:
            headers = {"Authorization": f"Bearer {service}"}
            rs = await asyncio.gather(
                *(
                    client.post(
                        "/v1/tasks", json={**payload(i, "photography"), "user_id": u}, headers=headers
                    )
                    for i, u in enumerate(users)
                )
            )
            assert {r.status_code for r in rs} == {202}

    run_async(burst)


def test_a_user_submits_a_photo_watches_the_line_move_and_gets_the_image(
    live: Running, browser: Browser, tmp_path: Path
) -> None:
    photo = tmp_path / "selfie.png"
    photo.write_bytes(sample_selfie(3))
    secret = token(live, "maria", "user", credits=5)
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.goto(f"{live.api_url}/")
    page.fill("#token", secret)
    page.set_input_files("#person", str(photo))
    page.fill("#prompt", "warm film portrait")
    preload(live, AHEAD, "crowd")
    page.click("#go")
    expect(page.locator("#status")).to_contain_text("in line", timeout=20_000)
    shot(page, tmp_path, "user-page-waiting")
    expect(page.locator("#result")).to_be_visible(timeout=120_000)
    expect(page.locator("#status")).to_have_text("Here is your image")
    shot(page, tmp_path, "user-page-done")
    log: list[dict[str, Any]] = page.evaluate("window.genqueueLog")
    positions = [e["position"] for e in log if e["status"] == "queued"]
    assert positions[0] >= AHEAD // 2 and positions == sorted(positions, reverse=True), positions
    assert len(set(positions)) >= 10
    assert page.evaluate("localStorage.getItem('genqueue.token')") == secret
    delays = sorted(e["painted"] - e["arrived"] for e in log if e["painted"] is not None)
    p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
    p50 = statistics.median(delays)
    print(f"position changes shown: {len(delays)}; stream to screen p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    assert delays and p99 < 1000
    page.close()


def test_an_out_of_credits_submit_says_so_with_the_balance(
    live: Running, browser: Browser, tmp_path: Path
) -> None:
    photo = tmp_path / "selfie.png"
    photo.write_bytes(sample_selfie(4))
    secret = token(live, "broke", "user")
    page = browser.new_page()
    page.goto(f"{live.api_url}/")
    page.fill("#token", secret)
    page.select_option("#kind", "fitting")
    page.set_input_files("#person", str(photo))
    page.set_input_files("#garment", str(photo))
    page.click("#go")
    expect(page.locator("#error")).to_have_text("You are out of credits: you have 0, and this costs 2.")
    expect(page.locator("#progress")).to_be_hidden()
    page.close()


def test_the_ops_page_shows_a_burst_in_progress(live: Running, browser: Browser, tmp_path: Path) -> None:
    admin = token(live, "ops", "admin")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{live.api_url}/ops")
    page.fill("#token", admin)
    page.locator("#token").dispatch_event("change")
    preload(live, 60, "burst")
    expect(page.locator("#pools tbody tr")).to_have_count(2, timeout=10_000)
    # Predicates as functions: a string expression is evaluated with eval(), which the
    # page's Content-Security-Policy refuses.
    page.wait_for_function(
        "() => ['waiting', 'running'].some((id) => Number(document.getElementById(id).textContent) > 0)",
        timeout=10_000,
    )
    before = int(page.locator("#succeeded").text_content() or 0)
    page.wait_for_function(
        "(want) => Number(document.getElementById('succeeded').textContent) >= want",
        arg=before + 40,
        timeout=60_000,
    )
    expect(page.locator("#pools tbody tr").first).to_contain_text("project-a")
    shot(page, tmp_path, "ops-page")
    page.close()
