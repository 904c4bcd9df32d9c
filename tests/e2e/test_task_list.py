"""`GET /v1/tasks`, the intake switch and the retry of a failed task over HTTP, on a real Valkey.

The app runs under uvicorn in a thread with no actors: submitted tasks stay queued, and a
failure is appended as the QueueActor writes one (tests/e2e/test_ops_actions.py runs them
with the actors).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from actors.audit import audit
from actors.config import CreditsConfig
from events.catalogue import CreditsGranted, CreditsRefunded, Event, TaskFailed
from serve_app.cli.burst import payload
from tests.helpers import append_to, log_of, make_config
from tests.served import App, served

BODY = payload(0, "photography")


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    config = make_config(
        store_url, str(tmp_path_factory.mktemp("list")), auth=True, credits=CreditsConfig(photography=1)
    )
    with served(config) as running:
        yield running


def grant(app: App, *users: str) -> None:
    append_to(app.config, [CreditsGranted(user_id=u, amount=100, by="test", at=time.time()) for u in users])


def submit(client: httpx.Client, headers: dict[str, str], user: str | None = None) -> str:
    body = {k: v for k, v in BODY.items() if k != "user_id"}
    r = client.post("/v1/tasks", json={**body, **({"user_id": user} if user else {})}, headers=headers)
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def listed(client: httpx.Client, headers: dict[str, str], **params: Any) -> list[str]:
    """Every task id of the list, following `next_cursor` 3 at a time."""
    ids: list[str] = []
    cursor = None
    while True:
        page = client.get(
            "/v1/tasks",
            params={"limit": 3, **params, **({"cursor": cursor} if cursor else {})},
            headers=headers,
        )
        assert page.status_code == 200, page.text
        ids += [t["task_id"] for t in page.json()["tasks"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return ids


def failure(task_id: str, user: str) -> list[Event]:
    """The events of a failed attempt's end, with its refund, as the QueueActor writes them."""
    now = time.time()
    return [
        TaskFailed(task_id=task_id, attempt=1, error="upstream said no", at=now),
        CreditsRefunded(user_id=user, task_id=task_id, amount=1, reason="failed", at=now),
    ]


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def test_each_caller_lists_only_its_tasks_newest_first_and_pages_miss_nothing(app: App) -> None:
    """Users see their own tasks only (another's user_id is a 403), a service token the tasks it
    submitted or one user's, an admin every task; paging while tasks arrive shows each once."""
    alice, bob = app.token("alice", "user"), app.token("bob", "user")
    service, admin = app.token("shop", "service"), app.token("ops", "admin")
    grant(app, "alice", "bob", "carol")
    with httpx.Client(base_url=app.url, timeout=30) as client:
        hers = [submit(client, alice) for _ in range(5)]
        his = [submit(client, bob) for _ in range(2)]
        shop = [submit(client, service, "carol") for _ in range(4)]
        assert listed(client, alice) == hers[::-1]
        assert listed(client, bob) == his[::-1]
        is_problem(client.get("/v1/tasks", params={"user_id": "bob"}, headers=alice), 403)
        assert listed(client, service) == shop[::-1]
        assert listed(client, service, user_id="alice") == hers[::-1]
        everyone = listed(client, admin)
        assert everyone[:11] == (hers + his + shop)[::-1]
        first = client.get("/v1/tasks", params={"limit": 4}, headers=admin).json()
        item, single = (
            first["tasks"][0],
            client.get(f"/v1/tasks/{first['tasks'][0]['task_id']}", headers=admin),
        )
        timeless = {k for k in item if k.startswith("eta")}  # read a moment apart
        assert {k: v for k, v in item.items() if k not in timeless} == {
            k: v for k, v in single.json().items() if k not in timeless
        }
        # Tasks submitted between pages sort before the cursor: the pages go on unshifted.
        seen, cursor = [t["task_id"] for t in first["tasks"]], first["next_cursor"]
        while cursor:
            submit(client, service, "carol")
            page = client.get("/v1/tasks", params={"limit": 4, "cursor": cursor}, headers=admin).json()
            seen += [t["task_id"] for t in page["tasks"]]
            cursor = page["next_cursor"]
        assert seen == everyone


def test_status_filters_and_bad_input_are_422_problems(app: App) -> None:
    """A failed task is listed by status=failed for its user and the admin; a cursor of another
    list, a forged cursor and out-of-range filters are 422 problems naming the field."""
    dana, eve, admin = app.token("dana", "user"), app.token("eve", "user"), app.token("ops", "admin")
    grant(app, "dana", "eve")
    with httpx.Client(base_url=app.url, timeout=30) as client:
        ids = [submit(client, dana) for _ in range(4)]
        append_to(app.config, failure(ids[1], "dana"))
        assert listed(client, dana, status="failed") == [ids[1]]
        assert listed(client, dana, status="queued") == [ids[3], ids[2], ids[0]]
        assert ids[1] in listed(client, admin, status="failed")
        assert listed(client, eve, status="failed") == []
        cursor = client.get("/v1/tasks", params={"limit": 1}, headers=dana).json()["next_cursor"]
        bad = is_problem(client.get("/v1/tasks", params={"cursor": cursor}, headers=eve), 422)
        assert bad["errors"][0]["field"] == "cursor"
        for params in (
            {"cursor": "not-a-cursor"},
            {"cursor": "W1tbW1tbW1td"},
            {"cursor": "x" * 201},
            {"limit": 0},
            {"limit": 101},
            {"limit": "many"},
            {"status": "lost"},
            {"user_id": "bad id!"},
        ):
            is_problem(client.get("/v1/tasks", params=params, headers=dana), 422)


def test_a_paused_intake_refuses_submits_with_503_and_no_charge_then_accepts(app: App) -> None:
    """Paused: a submit is a 503 with Retry-After and the balance stays; /v1/queue and /readyz
    say so, and so does a restarted app; a user cannot pause; resumed: a submit is accepted and
    charged."""
    frank, admin = app.token("frank", "user"), app.token("ops", "admin")
    grant(app, "frank")
    body = {k: v for k, v in BODY.items() if k != "user_id"}
    with httpx.Client(base_url=app.url, timeout=30) as client:
        is_problem(client.post("/v1/admin/intake/pause", headers=frank), 403)
        paused = client.post(
            "/v1/admin/intake/pause",
            json={"reason": "key rotation", "retry_after_seconds": 42},
            headers=admin,
        )
        assert paused.status_code == 200 and paused.json()["paused"] is True
        try:
            before = client.get("/v1/me", headers=frank).json()["balance"]
            refused = client.post("/v1/tasks", json=body, headers=frank)
            assert is_problem(refused, 503)["intake"] == "paused"
            assert refused.headers["Retry-After"] == "42"
            assert client.get("/v1/me", headers=frank).json()["balance"] == before
            intake = client.get("/v1/queue", headers=admin).json()["intake"]
            assert (intake["paused"], intake["reason"], intake["by"]) == (True, "key rotation", "ops")
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["intake"]["paused"] is True
            with served(app.config) as restarted:  # the switch is in the store, not in a process
                again = httpx.post(f"{restarted.url}/v1/tasks", json=body, headers=frank, timeout=30)
                assert is_problem(again, 503)["intake"] == "paused"
        finally:
            resumed = client.post("/v1/admin/intake/resume", headers=admin)
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        submit(client, frank)
        assert client.get("/v1/me", headers=frank).json()["balance"] == before - 1


def test_a_failed_task_is_retried_as_a_new_task_and_the_credits_stay_right(app: App) -> None:
    """The retry of a failed (and refunded) task is a new task charged once to the same user; a
    second retry answers the first; a queued task cannot be retried; the ledger audit holds."""
    gina, admin = app.token("gina", "user"), app.token("ops", "admin")
    grant(app, "gina")
    with httpx.Client(base_url=app.url, timeout=30) as client:
        task, other = submit(client, gina), submit(client, gina)
        append_to(app.config, failure(task, "gina"))
        assert client.get("/v1/me", headers=gina).json()["balance"] == 99
        is_problem(client.post(f"/v1/admin/tasks/{task}/retry", headers=gina), 403)
        is_problem(client.post(f"/v1/admin/tasks/{other}/retry", headers=admin), 409)
        retried = client.post(f"/v1/admin/tasks/{task}/retry", headers=admin)
        assert retried.status_code == 202, retried.text
        new = retried.json()
        assert new["retry_of"] == task and new["task_id"] != task and new["status"] == "queued"
        again = client.post(f"/v1/admin/tasks/{task}/retry", headers=admin)
        assert again.json()["task_id"] == new["task_id"] and again.headers["Idempotent-Replayed"] == "true"
        assert client.get("/v1/me", headers=gina).json()["balance"] == 98
        trail = client.get(f"/v1/tasks/{new['task_id']}/events", headers=gina).json()["events"]
        first = trail[0]["data"]
        assert (first["user_id"], first["prompt"], first["idempotency_key"]) == (
            "gina",
            BODY["prompt"],
            f"retry:{task}",
        )
        assert listed(client, gina)[0] == new["task_id"]
    report = audit(log_of(app.config))
    assert not report.refund_errors and not report.overdrawn, report.refund_errors
