"""Archived state for tests, made as the archiving pass makes it: segments written and read back,
`log.archived` appended, the stream trimmed; and a task's read models forgotten."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from events.archive import Archive, Entry, Sealed, encode
from events.catalogue import (
    CreditsCharged,
    CreditsGranted,
    Event,
    LogArchived,
    TaskDispatched,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from events.log_reader import archived_to
from events.ops_models import STATUSES
from events.redis_store import RedisEventStore
from events.task_ids import new_task_id


async def archive_upto(
    store: RedisEventStore, archive: Archive, last: str = "+", per_segment: int = 1000
) -> list[Sealed]:
    """Archive the stream's entries after the archived point up to `last` (included), at most
    `per_segment` to a segment; each segment written, recorded, then trimmed from the stream."""
    # The log.archived events appended here are newer than `last`: "+" is the last id now.
    last = await store.last_id() if last == "+" else last
    after = await archived_to(store)
    digest = await store.log_field("digest") or ""
    sealed: list[Sealed] = []
    while True:
        page = await store.read_flat(after, per_segment, last)
        entries: list[Entry] = [(entry_id, fields) for entry_id, fields in page]
        if not entries:
            return sealed
        done = await asyncio.to_thread(archive.write, entries, digest)
        await store.append([logged(done)])
        await store.trim_to(done.segment.last)
        sealed.append(done)
        after, digest = done.segment.last, done.digest


def finished_tasks(n: int, user: str = "u1", at: float | None = None) -> list[Event]:
    """A credit grant, then `n` tasks submitted, charged, dispatched, started and succeeded, at
    `at` (default: now, which their time-ordered ids tell): a log that audits clean."""
    at = time.time() if at is None else at
    events: list[Event] = [CreditsGranted(user_id=user, amount=10 * n, at=at)]
    for i in range(n):
        task_id = new_task_id(int(at * 1000) + i)
        events += [
            TaskSubmitted(task_id=task_id, user_id=user, kind="photography", prompt="p", inputs={}, at=at),
            CreditsCharged(user_id=user, task_id=task_id, amount=1, at=at),
            TaskDispatched(task_id=task_id, attempt=1, worker=0, lease_deadline=at + 60, at=at),
            TaskStarted(task_id=task_id, attempt=1, pool="p1", key_id="p1#1", at=at),
            TaskSucceeded(task_id=task_id, attempt=1, result="r", mime_type="image/png", elapsed=0.1, at=at),
        ]
    return events


def logged(sealed: Sealed) -> LogArchived:
    """The `log.archived` event of a segment written."""
    return LogArchived(
        segment=sealed.segment.name,
        first=sealed.segment.first,
        last=sealed.segment.last,
        count=sealed.count,
        digest=sealed.digest,
        prev_digest=sealed.prev_digest,
        bytes=sealed.bytes,
        at=time.time(),
    )


async def forget_task(store: RedisEventStore, task_id: str, user_id: str, token_id: str = "") -> None:
    """Delete a task's read models: its view, its audit list and its task-list index entries."""
    keys = store.keys
    async with store._r.pipeline(transaction=True) as pipe:
        pipe.delete(keys.task(task_id), keys.task_log(task_id))
        for index in (keys.tasks, keys.user_tasks(user_id), *(keys.status_tasks(s) for s in STATUSES)):
            pipe.zrem(index, task_id)
        if token_id:
            pipe.zrem(keys.token_tasks(token_id), task_id)
        await pipe.execute()


def segment_file(archive: Archive, name: str) -> Path:
    """The local file of a segment of a `file://` archive."""
    return Path(archive.url.removeprefix("file://")) / name


def rewrite(archive: Archive, name: str, entries: Sequence[Entry], prev_digest: str) -> None:
    """Replace a segment's file with `entries` chained to `prev_digest`: a whole segment again,
    with another digest (unless the entries are the same)."""
    data, _ = encode(entries, prev_digest)
    segment_file(archive, name).write_bytes(data)
