"""The user page and the ops page in a real browser: Playwright driving Debian's Chromium
(headless) against a live genqueue (Ray Serve, actors, embedded Valkey; the offline provider, or
the Gemini emulator for an upstream that rejects every key)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.config import CreditsConfig, PoolConfig, ProviderConfig, Secret
from emulator.server import running as emulator
from emulator.wire import EmulatorConfig, PoolSpec
from events.catalogue import CreditsCharged, KeyTokenGranted, TaskSubmitted
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.e2e.pages_helpers import (
    OneAtATime,
    api,
    preload,
    selfie,
    shot,
    stages_shown,
    token,
    user_page,
)
from tests.helpers import append_to, log_of, make_config

CHROMIUM = os.environ.get("GENQUEUE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: the browser tests are skipped", allow_module_level=True)

from playwright.sync_api import Browser, expect, sync_playwright  # noqa: E402

AHEAD = 40
# The progress bar's steps, in the order the page shows them.
STAGES = ("waiting", "waiting_for_quota", "starting", "generating", "done")
# What no message for a person may contain: the API's field names and problem fields.
FIELD_NAMES = re.compile(r"images\.|idempotency|_|detail|errors|\bfield\b")


@pytest.fixture(scope="module")
def genqueues(ray_session: None) -> Iterator[OneAtATime]:
    one = OneAtATime()
    try:
        yield one
    finally:
        one.stack.close()


@pytest.fixture
def live(genqueues: OneAtATime, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Running:
    """A genqueue whose quota runs out under a burst: two pools of 5 calls per 2 s window (10 a
    window) and 4 slots, so a burst's tasks wait for their turn and then for quota."""

    def start(stack: contextlib.ExitStack) -> Running:
        config = make_config(
            store_url,
            str(tmp_path_factory.mktemp("pages")),
            slots=4,
            latency=0.15,
            pools=(("project-a", 150, 2.0), ("project-b", 150, 2.0)),
            port=free_port(),
            auth=True,
            credits=CreditsConfig(photography=1, fitting=2),
        )
        return stack.enter_context(running(config, dashboard=False))

    return genqueues.get("tight quota", start)


REVOKED = "test-key-revoked-00000000001"


@pytest.fixture
def rejecting(genqueues: OneAtATime, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Running:
    """A genqueue whose only key upstream (the Gemini emulator) rejects as suspended."""

    def start(stack: contextlib.ExitStack) -> Running:
        spec = PoolSpec("proj", 600, (REVOKED,))
        url = stack.enter_context(
            emulator(EmulatorConfig(pools=(spec,), window_seconds=1.0, latency=0.05, revoked=(REVOKED,)))
        )
        config = make_config(
            store_url,
            str(tmp_path_factory.mktemp("rejected")),
            port=free_port(),
            auth=True,
            credits=CreditsConfig(photography=1, fitting=2),
            provider=ProviderConfig(name="gemini", base_url=url, timeout_seconds=10, image_size="512"),
            pool_configs=(PoolConfig(name="proj", rpm=600, keys=(Secret(REVOKED),), window_seconds=1.0),),
        )
        return stack.enter_context(running(config, dashboard=False))

    return genqueues.get("every key rejected", start)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def spent_for(live: Running, dispatched: float, granted: float) -> float:
    """Seconds between a task's dispatch and its grant during which every pool's window was
    spent (held its capacity of grants), from the grants in the log, in steps of 10 ms."""
    grants: dict[str, list[KeyTokenGranted]] = {p.name: [] for p in live.config.pools}
    for stored in log_of(live.config):
        if isinstance(stored.event, KeyTokenGranted):
            grants[stored.event.pool].append(stored.event)

    def spent(pool: list[KeyTokenGranted], t: float) -> bool:
        inside = [g for g in pool if t - g.window < g.at <= t]
        return bool(inside) and len(inside) >= inside[-1].capacity

    steps = int((granted - dispatched) / 0.01)
    return 0.01 * sum(all(spent(g, dispatched + 0.01 * i) for g in grants.values()) for i in range(steps))


def test_a_user_waits_in_line_then_for_quota_and_gets_the_image(
    live: Running, browser: Browser, tmp_path: Path
) -> None:
    """Behind 40 tasks with 10 calls a window, the page shows the line moving with an ETA range,
    the wait for quota when the task holds a slot for it, then generating and the image: each
    stage in the bar's order and in words."""
    secret = token(live, "maria", "user", credits=5)
    page = user_page(live, browser, secret, selfie(tmp_path, 3), phone=True)
    page.fill("#prompt", "warm film portrait")
    expect(page.locator("#balance-value")).to_have_text("5 credits")
    preload(live, AHEAD, "crowd")
    page.click("#go")
    expect(page.locator("#status")).to_contain_text("in line", timeout=20_000)
    expect(page.locator("#balance-value")).to_have_text("4 credits")
    task_id = page.evaluate("localStorage.getItem('genqueue.task')")
    expect(page.locator('#stages li[data-stage="waiting"]')).to_have_class(re.compile(r"\bcurrent\b"))
    expect(page.locator("#eta")).to_have_text(re.compile(r"^We start on it "))
    shot(page, tmp_path, "user-page-waiting")
    expect(page.locator("#result")).to_be_visible(timeout=60_000)
    expect(page.locator("#status")).to_have_text("Here is your image")
    expect(page.locator("#stages")).to_have_class(re.compile(r"\bfinished\b"))
    shot(page, tmp_path, "user-page-done")
    log: list[dict[str, Any]] = page.evaluate("window.genqueueLog")
    shown = stages_shown(log)
    assert shown[0] == "waiting" and shown[-2:] == ["generating", "done"], shown
    # The replica judges "a place is free" from pool views at most 0.2 s old: a task dispatched
    # as the tasks ahead take the window's last places may show `starting` for that long first.
    steady = [st for i, st in enumerate(shown) if shown[i : i + 2] != ["starting", "waiting_for_quota"]]
    assert steady == sorted(steady, key=STAGES.index), shown
    # Whether the task waits for quota in its place in line or in a slot is the queue's
    # choice; if every pool's window was spent for longer than the page's views may lag (the
    # pools' views, then their settling) while it held its slot, the page said so. (A token
    # granted late on a loaded machine while a place is free is `starting`.)
    at = {e["type"]: e["data"]["at"] for e in api(live, secret, f"/v1/tasks/{task_id}/events")["events"]}
    if (spent := spent_for(live, at["task.dispatched"], at["key.token_granted"])) > 0.5:
        assert "waiting_for_quota" in shown, (spent, at, shown)
    words = {"waiting_for_quota": "Your turn has come: waiting for quota", "generating": "Generating…"}
    assert all(e["said"] == words.get(e["stage"], e["said"]) for e in log), log
    positions = [e["position"] for e in log if e["stage"] == "waiting" and e["position"] is not None]
    assert positions[0] >= AHEAD // 2 and positions == sorted(positions, reverse=True), positions
    assert len(set(positions)) >= 5, positions
    etas = [e["eta"] for e in log if e["stage"] == "waiting"]
    assert any(re.fullmatch(r"We start on it in about \d+\u2013\d+ s", t) for t in etas), etas
    assert page.evaluate("localStorage.getItem('genqueue.token')") == secret
    assert page.evaluate("localStorage.getItem('genqueue.task')") is None
    delays = sorted(e["painted"] - e["arrived"] for e in log if e["painted"] is not None)
    p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
    p50 = statistics.median(delays)
    print(f"updates shown: {len(delays)}, {shown}; stream to screen p50 {p50:.1f}, p99 {p99:.1f} ms")
    assert delays and p99 < 1000
    page.close()


def test_refused_submits_are_said_in_words_beside_the_button(
    live: Running, browser: Browser, tmp_path: Path
) -> None:
    """No token, a wrong token, a file that is no image, a missing garment photo and a try-on
    the balance does not cover: each a sentence beside the button naming no field of the API,
    and nothing charged."""
    secret, broke = token(live, "wordy", "user", credits=3), token(live, "broke", "user")
    photo, text = selfie(tmp_path, 5), tmp_path / "notes.png"
    text.write_text("these are my notes, not a photo")
    page = user_page(live, browser, "", photo)
    said: list[str] = []

    def press(expected: str) -> None:
        page.click("#go")
        expect(page.locator(".actions #error")).to_have_text(expected)
        said.append(expected)

    press("Please enter your access token first.")
    page.fill("#token", "gq_not-a-real-token")
    press("Your access token is not valid. Please check it and try again.")
    page.fill("#token", secret)
    page.set_input_files("#person", str(text))
    press(
        "Your photo can't be used: it is not a PNG, JPEG or WebP image we can read. "
        "Please choose another one."
    )
    page.set_input_files("#person", str(photo))
    page.select_option("#kind", "fitting")
    press("Please choose the garment photo.")
    page.set_input_files("#garment", str(photo))
    page.fill("#token", broke)
    press("You are out of credits: you have 0, and this costs 2.")
    assert not [s for s in said if FIELD_NAMES.search(s)], said
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.locator("#go")).to_be_enabled()
    assert api(live, secret, "/v1/me")["charged"] == 0
    page.close()


def test_a_second_press_makes_no_second_task_and_a_cancel_refunds(
    live: Running, browser: Browser, tmp_path: Path
) -> None:
    """A double click and a second submit while the task is open make one task and one charge;
    the next press clears the image, and cancelling that task shows the refund and the balance."""
    secret = token(live, "twice", "user", credits=5)
    page = user_page(live, browser, secret, selfie(tmp_path, 6))
    preload(live, 10, "before-twice")
    page.locator("#go").dblclick()
    page.evaluate("() => document.getElementById('submit-form').requestSubmit()")
    expect(page.locator("#go")).to_be_disabled()
    page.locator("#go").click(force=True)  # a disabled button: the click does nothing
    expect(page.locator("#result")).to_be_visible(timeout=60_000)
    expect(page.locator("#go")).to_be_enabled()
    account = api(live, secret, "/v1/me")
    assert (account["charged"], account["balance"]) == (1, 4), account
    expect(page.locator("#balance-value")).to_have_text("4 credits")
    preload(live, 12, "before-cancel")
    page.click("#go")
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#status")).to_contain_text("in line", timeout=20_000)
    expect(page.locator("#balance-value")).to_have_text("3 credits")
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("Cancelled")
    expect(page.locator("#detail")).to_have_text("1 credit refunded; your balance is now 4 credits.")
    expect(page.locator("#balance-value")).to_have_text("4 credits")
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#go")).to_be_enabled()
    account = api(live, secret, "/v1/me")
    assert (account["charged"], account["refunded"], account["balance"]) == (2, 1, 4), account
    page.close()


def test_a_task_whose_deadline_passed_says_so_with_the_refund_and_the_balance(
    live: Running, browser: Browser, tmp_path: Path
) -> None:
    """A task whose deadline passed before it could start (submitted with a deadline already
    gone, so the queue expires it at once) is picked up by the page, which says so in words with
    the refund and the balance it left, and lets Generate be pressed again."""
    secret = token(live, "late", "user", credits=3)
    page = user_page(live, browser, secret, selfie(tmp_path, 9))
    now, task_id = time.time(), uuid.uuid4().hex
    late = TaskSubmitted(
        task_id=task_id,
        user_id="late",
        kind="photography",
        prompt="p",
        inputs={"person": f"tasks/{task_id}/person.png"},
        deadline=now - 1.0,
        at=now,
    )
    append_to(live.config, [late, CreditsCharged(user_id="late", task_id=task_id, amount=1, at=now)])
    page.evaluate("(id) => localStorage.setItem('genqueue.task', id)", task_id)
    page.reload()
    expect(page.locator("#status")).to_have_text("Your image could not start in time", timeout=20_000)
    expect(page.locator("#detail")).to_have_text(
        "It could not start before your deadline, so it cost nothing: 1 credit refunded; "
        "your balance is now 3 credits. Please try again, or allow more time."
    )
    assert not FIELD_NAMES.search(page.locator("#detail").text_content() or "")
    expect(page.locator("#stages")).to_have_class(re.compile(r"\bended\b"))
    expect(page.locator("#go")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('genqueue.task')") is None
    account = api(live, secret, "/v1/me")
    assert (account["charged"], account["refunded"], account["balance"]) == (1, 1, 3), account
    page.close()


def test_a_reload_picks_up_the_open_try_on_and_follows_it_to_the_image(
    live: Running, browser: Browser, tmp_path: Path
) -> None:
    """Reloading while a try-on waits shows the same task again, in try-on words, until its
    image; one charge."""
    photo = selfie(tmp_path, 7)
    secret = token(live, "reloader", "user", credits=4)
    page = user_page(live, browser, secret, photo)
    page.select_option("#kind", "fitting")
    page.set_input_files("#garment", str(photo))
    preload(live, 20, "before-reload")
    page.click("#go")
    expect(page.locator("#status")).to_contain_text("in line", timeout=20_000)
    task = page.evaluate("localStorage.getItem('genqueue.task')")
    assert task
    page.reload()
    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#go")).to_be_disabled()
    expect(page.locator('#stages li[data-stage="generating"]')).to_have_text("Trying on")
    expect(page.locator("#result")).to_be_visible(timeout=60_000)
    expect(page.locator("#status")).to_have_text("Here is your try-on")
    expect(page.locator("#result")).to_have_attribute("alt", "your try-on")
    log: list[dict[str, Any]] = page.evaluate("window.genqueueLog")
    assert log[0]["status"] == "queued", log[:2]  # picked up while it still waited
    assert {e["task"] for e in log} == {task}
    assert all(e["said"] == "Trying on…" for e in log if e["stage"] == "generating"), log
    account = api(live, secret, "/v1/me")
    assert (account["charged"], account["balance"]) == (2, 2), account
    assert page.evaluate("localStorage.getItem('genqueue.task')") is None
    page.close()


def test_the_ops_page_shows_a_burst_in_progress(live: Running, browser: Browser, tmp_path: Path) -> None:
    """The ops page during a burst of 60: both pools, the queue moving, tasks succeeding."""
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


def test_when_upstream_rejects_every_key_the_page_says_so_in_words(
    rejecting: Running, browser: Browser, tmp_path: Path
) -> None:
    """Upstream rejects the only key: the waiting task says no generator is available and why,
    cancelling it refunds, and a new press is refused in words with nothing charged."""
    secret = token(rejecting, "stuck", "user", credits=3)
    page = user_page(rejecting, browser, secret, selfie(tmp_path, 8))
    page.click("#go")
    expect(page.locator("#status")).to_have_text("Waiting for a generator", timeout=30_000)
    expect(page.locator("#detail")).to_have_text(
        re.compile(r"^No generator is available right now: .+; we will start as soon as one is")
    )
    assert not FIELD_NAMES.search(page.locator("#detail").text_content() or "")
    expect(page.locator('#stages li[data-stage="waiting_for_quota"]')).to_have_class(
        re.compile(r"\bblocked\b")
    )
    expect(page.locator("#eta")).to_have_text("")
    shot(page, tmp_path, "user-page-blocked")
    page.click("#cancel")
    expect(page.locator("#detail")).to_have_text("1 credit refunded; your balance is now 3 credits.")
    page.click("#go")
    expect(page.locator(".actions #error")).to_contain_text("No generator is available right now")
    account = api(rejecting, secret, "/v1/me")
    assert (account["charged"], account["balance"]) == (1, 3), account
    page.close()
