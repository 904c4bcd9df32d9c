"""The batch submit over HTTP on a real Valkey: per-item results side by side, charges, idempotency,
roles, bounds and the token's rate.

The app runs under uvicorn in a thread with no actors: submitted tasks stay waiting.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from PIL import Image

from actors.blobs import blob_store
from actors.config import CreditsConfig
from events.catalogue import CreditsGranted, TaskSubmitted
from serve_app.http.auth import new_token
from tests.e2e.deadlines_helpers import counted_from_the_submit
from tests.helpers import append_to, log_of, make_config
from tests.served import App, served


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    base = make_config(
        store_url,
        str(tmp_path_factory.mktemp("batch")),
        auth=True,
        credits=CreditsConfig(photography=1, fitting=2),
        per_user_waiting=3,
    )
    limits = replace(
        base.limits,
        max_batch_tasks=6,
        max_body_bytes=20_000,
        max_batch_body_bytes=120_000,
        service_submit_rate="2/minute",
    )
    with served(replace(base, limits=limits)) as running:
        yield running


def _png(shade: int = 1) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 2, 3)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _task(user: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "photography", "prompt": "p", "images": {"person": _png()}, "user_id": user, **extra}


def _grant(app: App, **amounts: int) -> None:
    append_to(
        app.config,
        [CreditsGranted(user_id=u, amount=a, by="test", at=time.time()) for u, a in amounts.items()],
    )


def _submitted(app: App) -> list[TaskSubmitted]:
    return [s.event for s in log_of(app.config) if isinstance(s.event, TaskSubmitted)]


def _post(app: App, headers: dict[str, str], tasks: Any) -> httpx.Response:
    return httpx.post(f"{app.url}/v1/tasks/batch", json={"tasks": tasks}, headers=headers, timeout=30)


def test_accepted_and_refused_items_come_back_side_by_side_in_request_order(app: App) -> None:
    """Queued items answer as a 202 would and are charged; refused ones carry their own problem
    (402, 422, 403, 429), and their images are removed."""
    _grant(app, ann=2, bob=5)
    service = app.token("svc-mixed", "service")
    tasks = [
        _task("ann"),
        _task("ann"),
        _task("ann"),  # ann's two credits are spent
        {"kind": "photography", "images": {"person": _png()}},  # no user_id
        _task("bob", images={"person": "not an image"}),
        {"kind": "sculpture", "user_id": "bob", "images": {"person": _png()}},
    ]
    before = {e.task_id for e in _submitted(app)}
    response = _post(app, service, tasks)
    assert response.status_code == 200, response.text
    body = response.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [202, 202, 402, 422, 422, 422] and (body["accepted"], body["refused"]) == (2, 4)
    first, second, poor = body["results"][:3]
    assert (first["balance"], second["balance"]) == (1, 0) and first["task_status"] == "queued"
    assert second["position"] == first["position"] + 1 and first["eta_seconds"] is not None
    assert poor["title"] == "Insufficient credits" and (poor["balance"], poor["price"]) == (0, 1)
    assert body["results"][3]["errors"] == [{"field": "user_id", "message": "required in a batch"}]
    assert body["results"][4]["errors"][0]["field"] == "images.person"
    assert body["results"][5]["errors"][0]["field"] == "kind"
    new = [e for e in _submitted(app) if e.task_id not in before]
    assert [e.task_id for e in new] == [first["task_id"], second["task_id"]]
    assert set(blob_store(app.config).task_ids()) >= {e.task_id for e in new}
    assert not set(blob_store(app.config).task_ids()) - {e.task_id for e in _submitted(app)}
    hoard = _post(app, app.token("svc-hoard", "service"), [_task("bob")] * 4)
    assert [r["status"] for r in hoard.json()["results"]] == [202, 202, 202, 429]
    assert hoard.json()["results"][3]["retry_after"] >= 1


def test_items_sending_the_same_image_each_keep_it_and_share_its_verdict(app: App) -> None:
    """An image several items send (a selfie in several styles) is stored for each of them as
    sent; a bad one is refused for each item that sends it, not only the first."""
    _grant(app, ivy=3)
    selfie, other, bad = _png(7), _png(9), base64.b64encode(b"not an image").decode()
    images = [selfie, bad, selfie, bad, other]
    tasks = [_task("ivy", images={"person": image}) for image in images]
    response = _post(app, app.token("svc-shared", "service"), tasks)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 422, 202, 422, 202]
    assert (
        results[1]["errors"] == results[3]["errors"] and results[1]["errors"][0]["field"] == "images.person"
    )
    by_id = {e.task_id: e for e in _submitted(app)}
    blobs = blob_store(app.config)
    for result, image in zip(results, images, strict=True):
        if result["status"] == 202:
            stored = blobs.get(by_id[result["task_id"]].inputs["person"])
            assert stored == base64.b64decode(image)


def test_each_item_is_idempotent_on_its_own_key(app: App) -> None:
    """A repeated batch returns the first tasks, replayed and not charged again; a key repeated
    within a batch names the task of its first use; a key reused for another request is a 409."""
    _grant(app, cid=10)
    service = app.token("svc-keys", "service")
    tasks = [
        _task("cid", idempotency_key="a"),
        _task("cid", idempotency_key="b"),
        _task("cid", idempotency_key="a"),
    ]
    first = _post(app, service, tasks).json()["results"]
    assert [r["replayed"] for r in first] == [False, False, True] and first[2]["task_id"] == first[0][
        "task_id"
    ]
    again = _post(
        app, app.token("svc-keys-2", "service"), [*tasks[:2], _task("cid", prompt="q", idempotency_key="b")]
    )
    results = again.json()["results"]
    assert [r["task_id"] for r in results[:2]] == [first[0]["task_id"], first[1]["task_id"]]
    assert all(r["replayed"] for r in results[:2]) and results[2]["status"] == 409
    assert results[2]["errors"] == [{"field": "idempotency_key", "message": "used for a different request"}]
    assert sum(1 for e in _submitted(app) if e.user_id == "cid") == 2
    me = httpx.get(f"{app.url}/v1/me", params={"user_id": "cid"}, headers=service, timeout=30).json()
    assert me["balance"] == 8


def test_a_batch_needs_a_service_or_admin_token_acting_within_its_scope(app: App) -> None:
    """A user token is refused from its headers; an admin may; a scoped service token gets a 403
    for each item outside its scope and the others go on."""
    _grant(app, dee=5, eve=5)
    user = app.token("dee", "user")
    refused = _post(app, user, [_task("dee")])
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    assert _post(app, app.token("root", "admin"), [_task("dee")]).json()["accepted"] == 1
    secret, event = new_token("svc-scoped", "service", users=["dee"])
    append_to(app.config, [event])
    scoped = _post(app, {"Authorization": f"Bearer {secret}"}, [_task("eve"), _task("dee")]).json()
    assert [r["status"] for r in scoped["results"]] == [403, 202]


def test_the_batch_bounds_are_413_and_422_problems(app: App) -> None:
    """More items than `max_batch_tasks` or a body past `max_batch_body_bytes` is a 413, no item
    an empty batch a 422; a batch may be larger than a single submit's body limit."""
    service = app.token("svc-bounds", "service")
    _grant(app, fay=10)
    too_many = _post(app, service, [_task("fay")] * 7)
    assert too_many.status_code == 413 and "max_batch_tasks" in too_many.json()["detail"]
    assert _post(app, service, []).status_code == 422
    padded = [_task("fay", prompt="x" * 1500) for _ in range(6)]  # past 20 kB, within 120 kB
    big = _post(app, service, padded)
    assert big.status_code == 200 and big.json()["accepted"] == 3  # fay's share of the queue
    huge = _post(app, service, [_task("fay", prompt="x" * 1900, webhook_url="h" * 2000)] * 6 * 5)
    assert huge.status_code == 413 and huge.headers["content-type"] == "application/problem+json"
    single = httpx.post(f"{app.url}/v1/tasks", json=padded[0] | {"prompt": "x" * 30_000}, headers=service)
    assert single.status_code == 413


def test_a_batch_counts_once_against_the_tokens_rate(app: App) -> None:
    """Two batches a minute pass whatever their size; the third is a 429 with Retry-After, and
    none of its items is queued."""
    _grant(app, gus=10, hal=10)
    service = app.token("svc-rate", "service")
    assert _post(app, service, [_task("gus"), _task("hal")]).json()["accepted"] == 2
    assert _post(app, service, [_task("gus"), _task("hal")]).json()["accepted"] == 2
    before = len(_submitted(app))
    limited = _post(app, service, [_task("gus"), _task("hal")])
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["retry_after"] == int(limited.headers["retry-after"])
    assert len(_submitted(app)) == before
    assert not set(blob_store(app.config).task_ids()) - {e.task_id for e in _submitted(app)}


def test_a_cancel_after_header_is_the_deadline_of_items_without_their_own(app: App) -> None:
    """`Cancel-After: 90s` gives each item without `deadline_seconds` a deadline 90 s after its
    submit; an item with its own keeps it. A header that does not parse is a 422 naming it,
    and nothing is queued."""
    _grant(app, cal=2)
    service = app.token("svc-cancel-after", "service")
    before = len(_submitted(app))
    bad = httpx.post(
        f"{app.url}/v1/tasks/batch",
        json={"tasks": [_task("cal")]},
        headers={**service, "Cancel-After": "soon"},
        timeout=30,
    )
    assert bad.status_code == 422, bad.text
    assert [e["field"] for e in bad.json()["errors"]] == ["Cancel-After"] and "Cancel-After" in bad.json()[
        "detail"
    ]
    assert len(_submitted(app)) == before
    answer = httpx.post(
        f"{app.url}/v1/tasks/batch",
        json={"tasks": [_task("cal"), _task("cal", deadline_seconds=3600)]},
        headers={**service, "Cancel-After": "90s"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text
    views = [
        httpx.get(f"{app.url}/v1/tasks/{r['task_id']}", headers=service, timeout=30).json()
        for r in answer.json()["results"]
    ]
    assert counted_from_the_submit(views[0], 90.0) and counted_from_the_submit(views[1], 3600.0), views
