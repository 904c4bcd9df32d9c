"""What the browser tests of the pages share: one genqueue at a time, tokens, API reads,
screenshots, a queue preloaded with other users' tasks, the user page opened with a photo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from actors.providers.images import sample_selfie
from events.catalogue import CreditsGranted
from serve_app.cli.burst import payload
from serve_app.http.auth import new_token
from serve_app.runtime import Running
from tests.helpers import append_to, run_async

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# Where screenshots go: a temporary folder, or GENQUEUE_SCREENSHOTS (the README's come from there).
SHOTS = os.environ.get("GENQUEUE_SCREENSHOTS")


class OneAtATime:
    """The module's genqueues, one running at a time (Ray runs one Serve app): asking for
    another stops the one running first."""

    def __init__(self) -> None:
        self.name = ""
        self.current: Running | None = None
        self.stack = contextlib.ExitStack()

    def get(self, name: str, start: Callable[[contextlib.ExitStack], Running]) -> Running:
        """The genqueue called `name`, started by `start` (into the stack given) if not running."""
        if name != self.name or self.current is None:
            self.stack.close()
            self.stack = contextlib.ExitStack()
            self.name, self.current = name, start(self.stack)
        return self.current


def token(live: Running, user: str, role: str, credits: int = 0) -> str:
    secret, event = new_token(user, role)
    grants = [CreditsGranted(user_id=user, amount=credits, by="test", at=time.time())] if credits else []
    append_to(live.config, [event, *grants])
    return secret


def api(live: Running, secret: str, path: str) -> Any:
    """What GET `path` answers the token `secret`."""
    r = httpx.get(f"{live.api_url}{path}", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def shot(page: Page, tmp_path: Path, name: str) -> None:
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def preload(live: Running, n: int, prefix: str) -> None:
    """n tasks of n other users ahead in the queue, submitted at once (one user each, so the
    page's task waits behind all of them in the same turn)."""
    service = token(live, "shop", "service")
    users = [f"{prefix}-{i}" for i in range(n)]
    append_to(live.config, [CreditsGranted(user_id=u, amount=1, by="test", at=time.time()) for u in users])

    async def burst() -> None:
        async with httpx.AsyncClient(base_url=live.api_url, timeout=60) as client:
            headers = {"Authorization": f"Bearer {service}"}
            bodies = [{**payload(i, "photography"), "user_id": u} for i, u in enumerate(users)]
            rs = await asyncio.gather(*(client.post("/v1/tasks", json=b, headers=headers) for b in bodies))
            assert {r.status_code for r in rs} == {202}

    run_async(burst)


def user_page(live: Running, browser: Browser, secret: str, photo: Path, phone: bool = False) -> Page:
    """The user page with the token entered and the photo chosen."""
    page = browser.new_page(viewport={"width": 390, "height": 844} if phone else None)
    page.goto(f"{live.api_url}/")
    page.fill("#token", secret)
    page.locator("#token").dispatch_event("change")
    page.set_input_files("#person", str(photo))
    return page


def selfie(tmp_path: Path, seed: int) -> Path:
    photo = tmp_path / f"selfie-{seed}.png"
    photo.write_bytes(sample_selfie(seed))
    return photo


def stages_shown(log: list[dict[str, Any]]) -> list[str]:
    """The stages the page painted (its `genqueueLog`), in order, each once."""
    return [e["stage"] for i, e in enumerate(log) if i == 0 or log[i - 1]["stage"] != e["stage"]]
