"""Blob retention against the real store: one blobs.expired event per task, blobs gone, views marked."""

from __future__ import annotations

import asyncio
import uuid

from actors.blobs import BlobStore, task_blob
from actors.janitor.actor import sweep
from events.catalogue import BlobsExpired, TaskDispatched, TaskStarted, TaskSucceeded
from events.redis_store import RedisEventStore
from tests.helpers import submitted


def test_a_task_past_its_retention_loses_its_blobs_once(store_url: str) -> None:
    """Swept before its time nothing happens; after it, one event, no blobs; a half-done sweep is finished."""
    blobs = BlobStore(f"memory://retention-{uuid.uuid4().hex[:8]}")

    async def main() -> None:
        store = RedisEventStore.from_url(store_url, f"r{uuid.uuid4().hex[:8]}")
        try:
            task = submitted(at=1000.0)
            t = task.task_id
            blobs.put(task_blob(t, "person.png"), b"in")
            blobs.put(task_blob(t, "result.png"), b"out")
            await store.append(
                [
                    task,
                    TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=1300.0, at=1001.0),
                    TaskStarted(task_id=t, attempt=1, pool="p", key_id="p#1", at=1001.0),
                    TaskSucceeded(
                        task_id=t, attempt=1, result=task_blob(t, "result.png"), mime_type="image/png",
                        elapsed=1.0, at=1002.0,
                    ),
                ]
            )  # fmt: skip
            assert await sweep(blobs, store, now=1061.0, retention=60.0) == []
            assert await sweep(blobs, store, now=1062.0, retention=60.0) == [t]
            assert blobs.task_ids() == []
            expired = [s.event for s in await store.read() if isinstance(s.event, BlobsExpired)]
            assert expired == [
                BlobsExpired(
                    task_id=t,
                    refs=[task_blob(t, "person.png"), task_blob(t, "result.png")],
                    retention_seconds=60.0,
                    at=1062.0,
                )
            ]
            view = await store.task_view(t)
            assert (
                view is not None
                and view["status"] == "succeeded"
                and float(view["blobs_expired_at"]) == 1062.0
            )
            # A sweep that announced but died before deleting: the next one deletes, silently.
            blobs.put(task_blob(t, "result.png"), b"out")
            assert await sweep(blobs, store, now=2000.0, retention=60.0) == []
            assert blobs.task_ids() == []
            assert sum(isinstance(s.event, BlobsExpired) for s in await store.read()) == 1
            assert [e["type"] for e in await store.task_log(t)][-1] == "blobs.expired"
        finally:
            await store.close()

    asyncio.run(main())
