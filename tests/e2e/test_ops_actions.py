"""The operator's actions with the actors running (Ray Serve, QueueActor, workers, embedded
Valkey): the retry of a task that really failed keeps the credits right, and an admin cancels
any user's waiting task."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from actors.audit import audit
from actors.blobs import blob_store, task_blob
from actors.config import CreditsConfig
from actors.providers.images import sample_selfie
from events.admission import Admission
from events.catalogue import CreditsGranted, TaskSubmitted
from serve_app.cli.burst import payload
from serve_app.http.auth import new_token
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.helpers import append_to, eventually, log_of, make_config, with_store


@pytest.fixture(scope="module")
def live(ray_session: None, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One slot and one attempt per task: a failed attempt fails its task, and tasks wait."""
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("ops-actions")),
        slots=1,
        latency=0.3,
        max_attempts=1,
        port=free_port(),
        auth=True,
        credits=CreditsConfig(photography=1),
    )
    with running(config, dashboard=False) as r:
        yield r


def token(live: Running, user: str, role: str) -> dict[str, str]:
    secret, event = new_token(user, role)
    append_to(live.config, [event, CreditsGranted(user_id=user, amount=10, by="test", at=time.time())])
    return {"Authorization": f"Bearer {secret}"}


def view(client: httpx.Client, task_id: str, headers: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/tasks/{task_id}", headers=headers).json()
    return body


def test_a_really_failed_task_retried_succeeds_and_the_audit_holds(live: Running) -> None:
    """A task whose input image is not stored fails its one attempt and is refunded; once the image
    is there, its retry runs to success: charged twice, refunded once, and the audit of the whole
    log holds (every task ended once, every refund matches its charge)."""
    admin, kim = token(live, "ops", "admin"), token(live, "kim", "user")
    task_id = uuid.uuid4().hex
    ref = task_blob(task_id, "person.png")
    event = TaskSubmitted(
        task_id=task_id, user_id="kim", kind="photography", prompt="p", inputs={"person": ref}, at=time.time()
    )
    receipt = with_store(live.config, lambda store: store.submit(event, Admission(price=1)))
    assert receipt.refused is None
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        eventually(
            lambda: view(client, task_id, kim)["status"] == "failed", timeout=20, what="the task failed"
        )
        blob_store(live.config).put(ref, sample_selfie(1))
        retried = client.post(f"/v1/admin/tasks/{task_id}/retry", headers=admin)
        assert retried.status_code == 202, retried.text
        new_id = retried.json()["task_id"]
        done = eventually(lambda: view(client, new_id, kim)["status"] in ("succeeded", "failed"), timeout=20)
        assert done and view(client, new_id, kim)["status"] == "succeeded"
        assert client.get("/v1/me", headers=kim).json()["balance"] == 9
    report = audit(log_of(live.config))
    assert report.ok, (report.refund_errors, report.never_ended, report.ended_twice)
    assert (report.credits["charged"], report.credits["refunded"], report.ended) == (
        2,
        1,
        {"failed": 1, "succeeded": 1},
    )


def test_an_admin_cancels_any_users_waiting_task_with_its_refund(live: Running) -> None:
    """Behind one slot a user's last task waits; an admin's cancel ends it with a refund."""
    admin, lea = token(live, "ops", "admin"), token(live, "lea", "user")
    body = {k: v for k, v in payload(0, "photography").items() if k != "user_id"}
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        ids = [client.post("/v1/tasks", json=body, headers=lea).json()["task_id"] for _ in range(5)]
        cancelled = client.delete(f"/v1/tasks/{ids[-1]}", headers=admin)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json() == {"task_id": ids[-1], "status": "cancelled", "refunded": 1}
        assert client.get("/v1/me", headers=lea).json()["balance"] == 10 - 4
        listed = client.get("/v1/tasks", params={"status": "cancelled"}, headers=lea).json()["tasks"]
        assert [t["task_id"] for t in listed] == [ids[-1]]
