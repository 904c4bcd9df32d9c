"""A task past its retention over HTTP: once its events are archived and its read models deleted,
`GET /v1/tasks/{id}` and `/events` answer the same from the archive, to its owner only; with
`[archive] serve_reads = false` they answer 410 Gone; a task never known stays 404."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import httpx

from events.archive import Archive
from events.catalogue import TaskDispatched, TaskStarted, TaskSucceeded
from events.redis_store import RedisEventStore
from events.task_ids import made_at_ms, new_task_id
from serve_app.cli.burst import payload
from serve_app.http.archived import SKEW_MS
from tests.archiving import archive_upto, forget_task
from tests.helpers import append_to, make_config, with_store
from tests.served import served

LINK = ("result_url", "result_url_expires_at", "result_url_expires_at_iso")  # signed afresh on each read


def finish(task_id: str) -> list[Any]:
    """The events of a worker's successful attempt."""
    now = time.time()
    return [
        TaskDispatched(task_id=task_id, attempt=1, worker=0, lease_deadline=now + 60, at=now),
        TaskStarted(task_id=task_id, attempt=1, pool="p1", key_id="p1#1", at=now + 0.1),
        TaskSucceeded(
            task_id=task_id, attempt=1, result="r", mime_type="image/png", elapsed=0.3, at=now + 0.4
        ),
    ]


def unlinked(view: dict[str, Any]) -> dict[str, Any]:
    """The view without its result link (signed again, with a new expiry, on every read)."""
    return {k: v for k, v in view.items() if k not in LINK}


def test_a_forgotten_task_reads_the_same_from_the_archive_and_410_when_reads_are_off(
    store_url: str, data_dir: str
) -> None:
    """Submitted over HTTP and finished, then archived (its trail's entries trimmed: still the
    same trail), then its read models deleted: its owner and an admin read the same view and
    events, another user a 404; unknown ids 404. With serve_reads off: 410 with a problem."""
    config = make_config(store_url, data_dir, auth=True)
    archive = Archive(f"file://{data_dir}/archive")
    with served(config) as app, httpx.Client(base_url=app.url, timeout=30) as client:
        alice, bob, ops = app.token("alice", "user"), app.token("bob", "user"), app.token("ops", "admin")
        body = {k: v for k, v in payload(1, "photography").items() if k != "user_id"}
        submitted = client.post("/v1/tasks", json=body, headers=alice)
        assert submitted.status_code == 202, submitted.text
        task = submitted.json()["task_id"]
        assert made_at_ms(task) is not None
        append_to(config, finish(task))
        view = client.get(f"/v1/tasks/{task}", headers=alice).json()
        trail = client.get(f"/v1/tasks/{task}/events", headers=alice).json()
        assert view["status"] == "succeeded" and view["result_url"]
        assert [e["type"] for e in trail["events"]] == [
            "task.submitted",
            "task.dispatched",
            "task.started",
            "task.succeeded",
        ]

        def archive_all(store: RedisEventStore) -> Any:
            return archive_upto(store, archive, per_segment=3)

        with_store(config, archive_all)
        assert client.get(f"/v1/tasks/{task}/events", headers=alice).json() == trail

        token_id = trail["events"][0]["data"]["token_id"]
        with_store(config, lambda store: forget_task(store, task, "alice", token_id))
        assert with_store(config, lambda store: store.task_view(task)) is None
        for who in (alice, ops):
            again = client.get(f"/v1/tasks/{task}", headers=who)
            assert again.status_code == 200, again.text
            assert unlinked(again.json()) == unlinked(view) and again.json()["result_url"]
            assert client.get(f"/v1/tasks/{task}/events", headers=who).json() == trail
        for path in (f"/v1/tasks/{task}", f"/v1/tasks/{task}/events"):
            assert client.get(path, headers=bob).status_code == 404
        for unknown in (uuid.uuid4().hex, new_task_id(), new_task_id(made_at_ms(task))):
            assert client.get(f"/v1/tasks/{unknown}", headers=ops).status_code == 404
            assert client.get(f"/v1/tasks/{unknown}/events", headers=ops).status_code == 404

    off = replace(config, archive=replace(config.archive, serve_reads=False))
    with served(off) as app, httpx.Client(base_url=app.url, timeout=30) as client:
        for path in (f"/v1/tasks/{task}", f"/v1/tasks/{task}/events"):
            gone = client.get(path, headers=alice)
            assert gone.status_code == 410, gone.text
            problem = gone.json()
            assert gone.headers["content-type"].startswith("application/problem+json")
            assert problem["type"].endswith("/gone") and problem["title"] == "Gone"
            assert "archived" in problem["detail"] and "serve_reads" in problem["detail"]
        assert client.get(f"/v1/tasks/{uuid.uuid4().hex}", headers=alice).status_code == 404
        # An id made after the archived point (and the clocks' leeway) cannot be archived: 404.
        later = new_task_id(int(time.time() * 1000) + SKEW_MS + 60_000)
        assert client.get(f"/v1/tasks/{later}", headers=alice).status_code == 404
