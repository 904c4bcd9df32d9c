"""The log read whole over the embedded Valkey: the archive's segments, then the live stream, every
entry once and in order; a segment missing or half-written is an error naming it; a trim under
a page is read from the archive; recovery and a task's trail read through the archive."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from actors.queue.state import QueueState, apply, restore, snapshot
from actors.shell import recover
from events.archive import Archive, ArchiveError, Entry, Sealed, SegmentError
from events.catalogue import StoredEvent
from events.codec import decode_flat
from events.log_reader import Chain, pages, raw_pages
from events.redis_store import RedisEventStore
from serve_app.http.archived import ArchivedTasks
from tests.archiving import archive_upto, finished_tasks, segment_file
from tests.helpers import submitted

Body = Callable[[RedisEventStore, Archive], Awaitable[None]]


@pytest.fixture
def run(store_url: str, tmp_path: Path) -> Callable[[Body], None]:
    """Runs a test body on a fresh namespace of the embedded Valkey and an archive of its own."""

    def runner(body: Body) -> None:
        async def main() -> None:
            store = RedisEventStore.from_url(store_url, f"r{uuid.uuid4().hex[:10]}")
            try:
                await body(store, Archive(f"file://{tmp_path}/archive"))
            finally:
                await store.close()

        asyncio.run(main())

    return runner


async def read_all(
    store: RedisEventStore, archive: Archive | None, after: str = "0-0", end: str = "+", count: int = 20_000
) -> list[tuple[str, list[str]]]:
    """Every entry `pages` gives, as (id, fields)."""
    return [(e[0], list(e[1])) async for page in pages(store, archive, after, end, count) for e in page]


async def live(store: RedisEventStore) -> list[tuple[str, list[str]]]:
    """The stream as it stands."""
    return [(i, list(f)) for i, f in await store.read_flat("0-0", 100_000)]


async def setup(store: RedisEventStore, archive: Archive, tasks: int = 60) -> tuple[list[Any], list[Sealed]]:
    """A log of `tasks` finished tasks whose first 150 entries are archived in segments of 40."""
    await store.append(finished_tasks(tasks))
    before = await live(store)
    sealed = await archive_upto(store, archive, before[149][0], per_segment=40)
    return before, sealed


def test_raw_pages_decode_to_the_events_the_text_gives(run: Callable[[Body], None]) -> None:
    """The raw read keeps the stream's fields as bytes (ids as text) and decodes, archive then
    stream, to exactly the events and ids the text read gives."""

    async def body(store: RedisEventStore, archive: Archive) -> None:
        await setup(store, archive)
        text = [(i, decode_flat(f)) async for page in pages(store, archive, count=33) for i, f in page]
        raw = [(i, f) async for page in raw_pages(store, archive, count=33) for i, f in page]
        assert all(isinstance(i, str) for i, _ in raw)
        assert {type(f[0]) for _, f in raw} == {str, bytes}  # archived: text; live: bytes
        assert [(i, decode_flat(f)) for i, f in raw] == text and len(text) > 150

    run(body)


def test_the_archive_then_the_stream_give_every_entry_once_in_order(run: Callable[[Body], None]) -> None:
    """Half archived in four segments: the whole log, ranges starting and ending inside a segment,
    at a segment's edge and in the live part, each read as the stream held it."""

    async def body(store: RedisEventStore, archive: Archive) -> None:
        before, sealed = await setup(store, archive)
        assert [s.count for s in sealed] == [40, 40, 40, 30]
        assert (await live(store))[0][0] > before[149][0]  # trimmed
        whole = await read_all(store, archive, count=7)
        assert whole[: len(before)] == before
        assert [json.loads(f[-1])["segment"] for _, f in whole[len(before) :]] == [
            s.segment.name for s in sealed
        ]
        ids = [i for i, _ in before]
        assert await read_all(store, archive, ids[57], ids[200]) == before[58:201]
        assert await read_all(store, archive, "0-0", ids[100]) == before[:101]
        assert await read_all(store, archive, sealed[1].segment.last, ids[120]) == before[80:121]
        assert await read_all(store, archive, ids[160], ids[170]) == before[161:171]

    run(body)


def test_a_segment_missing_or_half_written_is_an_error_naming_it(run: Callable[[Body], None]) -> None:
    """Without segment 2 a read from the start, and one starting inside its range, break at
    segment 3; without the last one the archive ends short; a truncated one is not whole; with
    no archive at all archived events cannot be read."""

    async def body(store: RedisEventStore, archive: Archive) -> None:
        before, sealed = await setup(store, archive)
        with pytest.raises(ArchiveError, match="archive"):
            await read_all(store, None)
        path = segment_file(archive, sealed[1].segment.name)
        data = path.read_bytes()
        path.unlink()
        with pytest.raises(ArchiveError, match=sealed[2].segment.name):
            await read_all(store, archive)
        with pytest.raises(ArchiveError, match=sealed[2].segment.name):
            await read_all(store, archive, before[50][0])
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(SegmentError, match=sealed[1].segment.name):
            await read_all(store, archive)
        path.write_bytes(data)
        segment_file(archive, sealed[3].segment.name).unlink()
        with pytest.raises(ArchiveError, match="short of"):
            await read_all(store, archive)

    run(body)


def test_a_trim_under_a_page_is_read_back_from_the_archive(run: Callable[[Body], None]) -> None:
    """The stream is archived and trimmed past the reader's place between two of its pages: the
    reader goes back to the archive for what was trimmed, and misses nothing."""

    async def body(store: RedisEventStore, archive: Archive) -> None:
        await store.append(finished_tasks(40))
        before = await live(store)
        read: list[tuple[str, list[str]]] = []
        async for page in pages(store, archive, count=50):
            read += [(e[0], list(e[1])) for e in page]
            if len(read) == 50:
                await archive_upto(store, archive, before[130][0], per_segment=60)
        assert read[: len(before)] == before
        assert len(read) == len(before) + 3  # and the three log.archived events

    run(body)


def test_a_cold_recovery_folds_the_archive_then_the_stream(run: Callable[[Body], None]) -> None:
    """With no snapshot, `recover` (as the QueueActor calls it) folds every event, archived or
    live, into the same state as a fold of the whole log."""

    async def body(store: RedisEventStore, archive: Archive) -> None:
        before, _ = await setup(store, archive, tasks=50)
        expected = QueueState()
        for entry_id, fields in before:
            apply(expected, StoredEvent(entry_id, decode_flat(fields)))
        recovered = await recover(
            store,
            "queue",
            load=restore,
            empty=QueueState,
            covers=lambda state: state.last_id,
            fold=apply,
            log=structlog.get_logger("test"),
            archive=archive,
        )
        assert recovered.replayed == len(before) + 4
        assert recovered.state.succeeded == 50
        got, want = snapshot(recovered.state), snapshot(expected)
        assert {k: v for k, v in got.items() if k != "last_id"} == {
            k: v for k, v in want.items() if k != "last_id"
        }

    run(body)


def test_a_tasks_trail_and_history_come_from_the_archive(run: Callable[[Body], None]) -> None:
    """A task's audit trail whose entries were trimmed reads them from the archive; a finished
    task's history is found by its id's time, an id without a time in the newest segments, an
    unknown id nowhere; a segment read once is served from the cache."""

    async def body(store: RedisEventStore, archive: Archive) -> None:
        old = submitted(uuid.uuid4().hex)  # an id made before ids told their time
        await store.append([old])
        await store.append(finished_tasks(30))
        before = await live(store)
        first = json.loads(before[2][1][-1])["task_id"]  # the first time-ordered task
        trail = await store.task_log(first)
        assert len(trail) == 5
        await archive_upto(store, archive, before[-1][0], per_segment=40)
        assert await store.task_log(first) == []
        reader = ArchivedTasks(archive)

        async def trimmed(ids: list[str]) -> Any:
            return await reader.by_ids(store, first, ids)

        assert await store.task_log(first, archived=trimmed) == trail
        history: list[Entry] = await reader.history(store, first)
        assert [json.loads(f[-1]) for _, f in history] == [e["data"] for e in trail]
        found = await reader.history(store, old.task_id)
        assert [json.loads(f[-1])["task_id"] for _, f in found] == [old.task_id]
        assert await reader.history(store, uuid.uuid4().hex) == []
        reads = reader.reads
        await reader.history(store, first)
        assert reader.reads == reads
        small = ArchivedTasks(archive, cache_bytes=1)  # keeps the segment read last
        await small.history(store, first)
        once = small.reads
        await small.history(store, first)
        assert small.reads == 2 * once  # each read again, in turn pushing out the one before

    run(body)


def test_chain_checks_each_link_against_the_segment_before(run: Callable[[Body], None]) -> None:
    """A read that is not strict keeps the first problem of each segment and goes on."""

    async def body(store: RedisEventStore, archive: Archive) -> None:
        before, sealed = await setup(store, archive)
        segment_file(archive, sealed[1].segment.name).unlink()
        check = Chain(strict=False)
        read = [e async for page in pages(store, archive, check=check) for e in page]
        assert len(read) == len(before) - 40 + 4
        assert list(check.problems) == [sealed[2].segment.name]

    run(body)
