"""The daily spend cap over HTTP on a real Valkey: the 429 `daily-cap` problem with its figures and
Retry-After until the next UTC midnight, per item in a batch, and the day's spend in `GET /v1/me`.

The app runs under uvicorn in a thread with no actors: submitted tasks stay waiting.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from actors.config import CreditsConfig
from events.catalogue import CreditsGranted, TaskSubmitted
from events.days import next_utc_midnight
from tests.helpers import append_to, log_of, make_config
from tests.served import App, served


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("daily-cap")),
        auth=True,
        credits=CreditsConfig(photography=1, fitting=2, daily_cap=3),
    )
    with served(config) as running:
        yield running


def _task(kind: str = "photography", **extra: Any) -> dict[str, Any]:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    images = {"person": png, **({"garment": png} if kind == "fitting" else {})}
    return {"kind": kind, "prompt": "p", "images": images, **extra}


def _submit(app: App, headers: dict[str, str], kind: str = "photography") -> httpx.Response:
    return httpx.post(f"{app.url}/v1/tasks", json=_task(kind), headers=headers, timeout=30)


def _me(app: App, headers: dict[str, str], **params: str) -> dict[str, Any]:
    answer = httpx.get(f"{app.url}/v1/me", params=params, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_over_the_cap_a_submit_is_a_429_until_the_next_utc_midnight(app: App) -> None:
    """Three tasks at 1 fill a cap of 3; the fourth, and a fitting at 2, are 429 `daily-cap`
    problems naming the spend, the cap, the price and the next UTC midnight (Retry-After the
    seconds to it); nothing is charged or logged, and `GET /v1/me` shows the day's spend."""
    append_to(app.config, [CreditsGranted(user_id="ann", amount=10, by="test", at=time.time())])
    ann = app.token("ann", "user")
    assert [_submit(app, ann).status_code for _ in range(3)] == [202, 202, 202]
    logged = len(log_of(app.config))
    before = time.time()
    refused = _submit(app, ann)
    after = time.time()
    assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "/problems/daily-cap" and problem["title"] == "Daily spend cap reached"
    assert (problem["spent_today"], problem["daily_cap"], problem["price"]) == (3, 3, 1)
    assert problem["until"] in {next_utc_midnight(before), next_utc_midnight(after)}
    until = dt.datetime.fromtimestamp(problem["until"], dt.UTC)
    assert problem["until_iso"] == until.strftime("%Y-%m-%dT%H:%M:%SZ") and until.time() == dt.time(0)
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after == problem["retry_after"]
    assert problem["until"] - after - 1 <= retry_after <= problem["until"] - before + 1
    fitting = _submit(app, ann, "fitting").json()
    assert (fitting["type"], fitting["price"], fitting["spent_today"]) == ("/problems/daily-cap", 2, 3)
    assert len(log_of(app.config)) == logged
    me = _me(app, ann)
    assert (me["balance"], me["charged"], me["spent_today"], me["daily_cap"]) == (7, 3, 3, 3)
    page = httpx.get(f"{app.url}/problems/daily-cap", timeout=30)
    assert page.status_code == 200 and "Daily spend cap reached" in page.text


def test_a_batch_refuses_each_item_over_its_users_cap_and_queues_the_others(app: App) -> None:
    """In one batch the items of a user at its cap are `daily-cap` problems with Retry-After's
    seconds; another user's items are queued, until its own cap."""
    append_to(
        app.config,
        [CreditsGranted(user_id=u, amount=10, by="test", at=time.time()) for u in ("bob", "cat")],
    )
    service = app.token("svc-cap", "service")
    assert _submit(app, app.token("bob", "user"), "fitting").status_code == 202  # bob: 2 of 3
    tasks = [_task(user_id=u) for u in ("bob", "cat", "bob", "cat", "cat", "cat")]
    answer = httpx.post(f"{app.url}/v1/tasks/batch", json={"tasks": tasks}, headers=service, timeout=30)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [202, 202, 429, 202, 202, 429]
    for refused in (results[2], results[5]):
        assert refused["type"] == "/problems/daily-cap" and refused["spent_today"] == 3
        assert 1 <= refused["retry_after"] <= 86_400 and refused["until"] > time.time()
    queued = {e.task_id for e in (s.event for s in log_of(app.config)) if isinstance(e, TaskSubmitted)}
    assert {results[i]["task_id"] for i in (0, 1, 3, 4)} <= queued
    assert _me(app, service, user_id="cat")["spent_today"] == 3
