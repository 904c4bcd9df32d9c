"""Forgetting finished tasks against a real Valkey: only when ended, archived and (with blob
retention) expired; never brought back by a later event; their blobs still swept."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from actors.blobs import FileBlobStore, task_blob
from actors.janitor.actor import sweep
from actors.janitor.archiver import archive_once
from events.archive import Archive
from events.catalogue import BlobsExpired, CreditsCharged, CreditsRefunded, TaskFailed, WebhookDelivered
from events.memory_store import MemoryEventStore
from events.redis_store import RedisEventStore
from events.store import EventStore
from tests.contract.log_helpers import config_of, later, lives, run, snapshots
from tests.helpers import submitted


def test_finished_tasks_are_forgotten_only_when_ended_archived_and_expired(
    store_url: str, tmp_path: Path
) -> None:
    """Old and archived: view, audit list and list entries go; recent, or ended in events not yet
    archived, or (blob retention on) blobs not expired or still stored: kept. Later events for a
    forgotten task write the log and the ledger, never a stub of its read models."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        now = time.time()
        (old,) = await lives(store, 1, at=now - 1000)
        (recent,) = await lives(store, 1, at=now - 10)
        await snapshots(store)
        assert (await archive_once(store, archive, config_of(task=0.0), later(), flush=True)).forgotten == 0
        (unarchived,) = await lives(store, 1, at=now - 1000)  # after the archived point
        k = store.keys
        report = await archive_once(store, archive, config_of(task=100.0), later(), flush=True)
        assert report.forgotten == 1
        assert await store.task_view(old) is None and await store._r.exists(k.task_log(old)) == 0
        for key in (k.tasks, k.user_tasks("u1"), k.token_tasks("tok1"), k.status_tasks("succeeded")):
            members = await store._r.zrange(key, 0, -1)
            assert old not in members and {recent, unarchived} <= set(members)
        assert await store.task_view(recent) and await store.task_view(unarchived)
        await store.append(
            [
                WebhookDelivered(task_id=old, webhook_id="w", attempts=1, code=200, at=now),
                CreditsRefunded(user_id="u1", task_id=old, amount=3, reason="r", at=now),
                BlobsExpired(task_id=old, refs=[], retention_seconds=60.0, at=now),
            ]
        )
        assert await store.task_view(old) is None and await store._r.exists(k.task_log(old)) == 0
        assert old not in await store._r.zrange(k.status_tasks("succeeded"), 0, -1)
        assert int((await store.user("u1"))[0]["balance"]) == 3
        assert [s.event.type for s in await store.read()][-3:] == [
            "webhook.delivered",
            "credits.refunded",
            "blobs.expired",
        ]

    run(store_url, body)


def test_with_blob_retention_only_expired_and_swept_tasks_are_forgotten(
    store_url: str, tmp_path: Path
) -> None:
    """Retention on: a task whose blobs did not expire is kept, as is one whose expired blobs are
    still stored (`keep`); a failed task with expired blobs goes."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        now = time.time()
        unexpired, stored, gone = await lives(store, 3, at=now - 1000)
        failed = uuid.uuid4().hex
        await store.append(
            [
                submitted(task_id=failed, at=now - 1000),
                TaskFailed(task_id=failed, attempt=1, error="e", at=now - 990),
                *(
                    BlobsExpired(task_id=t, refs=[], retention_seconds=60.0, at=now - 900)
                    for t in (stored, gone, failed)
                ),
            ]
        )
        await snapshots(store)
        config = config_of(task=100.0, blobs=60.0)
        report = await archive_once(store, archive, config, later(), flush=True, keep={stored})
        assert report.forgotten == 2
        assert [await store.task_view(t) is None for t in (unexpired, stored, gone, failed)] == [
            False,
            False,
            True,
            True,
        ]
        assert await store._r.zrange(store.keys.status_tasks("failed"), 0, -1) == []

    run(store_url, body)


@pytest.mark.parametrize("backend", ["memory", "valkey"])
def test_an_event_for_a_task_without_a_view_makes_no_read_model(backend: str, store_url: str) -> None:
    """Both stores: an event after a task's view is gone writes the log only; a submit makes a view."""

    async def main() -> None:
        namespace = f"g{uuid.uuid4().hex[:10]}"
        store: EventStore = (
            MemoryEventStore(namespace)
            if backend == "memory"
            else RedisEventStore.from_url(store_url, namespace)
        )
        try:
            ghost = uuid.uuid4().hex
            await store.append(
                [WebhookDelivered(task_id=ghost, webhook_id="w", attempts=1, code=200, at=1.0)]
            )
            await store.append([BlobsExpired(task_id=ghost, refs=[], retention_seconds=1.0, at=2.0)])
            assert await store.task_view(ghost) is None and await store.task_log(ghost) == []
            task = submitted(task_id=ghost, at=3.0)
            await store.append([task, BlobsExpired(task_id=ghost, refs=[], retention_seconds=1.0, at=4.0)])
            view = await store.task_view(ghost)
            assert view is not None and view["blobs_expired_at"] == "4.0"
            assert [e["type"] for e in await store.task_log(ghost)] == ["task.submitted", "blobs.expired"]
        finally:
            await store.close()

    asyncio.run(main())


def test_the_blob_sweep_still_expires_a_forgotten_tasks_blobs(store_url: str, tmp_path: Path) -> None:
    """Without a view, blobs written longer ago than the forgetting and the retention expire with
    their event; fresh ones (a submit on its way) stay, and so do all when nothing is forgotten."""
    blobs = FileBlobStore(tmp_path / "blobs")

    async def body(store: RedisEventStore) -> None:
        forgotten, arriving = uuid.uuid4().hex, uuid.uuid4().hex
        for task_id in (forgotten, arriving):
            blobs.put(task_blob(task_id, "person.png"), b"in")
        old = time.time() - 1000
        for path in (blobs.root / "tasks" / forgotten).iterdir():
            os.utime(path, (old, old))
        assert await sweep(blobs, store, time.time(), retention=60.0) == []
        assert await sweep(blobs, store, time.time(), retention=60.0, forgotten_after=100.0) == [forgotten]
        assert blobs.task_ids() == [arriving]
        (event,) = [s.event for s in await store.read() if isinstance(s.event, BlobsExpired)]
        assert event.task_id == forgotten and await store.task_view(forgotten) is None

    run(store_url, body)


def test_a_forgotten_users_ledger_keeps_only_the_retention_window(store_url: str, tmp_path: Path) -> None:
    """The ledger entries older than the forgetting point go with the user's forgotten tasks;
    newer ones and the balance stay (a user keeps little more than the balance hash)."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        now = time.time()
        old = await lives(store, 2, at=now - 1000, user="old-user")
        await store.append(
            [CreditsCharged(user_id="old-user", task_id=t, amount=1, at=now - 1000) for t in old]
            + [CreditsRefunded(user_id="old-user", task_id="t", amount=5, reason="r", at=now)]
        )
        balance = int((await store.user("old-user"))[0]["balance"])
        before = await store._r.llen(store.keys.ledger("old-user"))
        await snapshots(store)
        report = await archive_once(store, archive, config_of(task=100.0), later(), flush=True)
        assert report.forgotten == 2
        totals, ledger = await store.user("old-user")
        assert int(totals["balance"]) == balance
        assert before > 1 and [e["type"] for e in ledger] == ["credits.refunded"]
        assert all(float(e["at"]) >= now - 100 for e in ledger)

    run(store_url, body)
