"""The archiving pass against a real Valkey: archive then trim, the cutoff, and its faults (a crash
between write and trim, the archive unavailable, half-written segments)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.janitor.archiver import ALERT, _Pass, archive_once, cutoff, redacted
from events.archive import Archive, ArchiveError, Segment, SegmentError
from events.catalogue import AlertRaised, AlertResolved, LogArchived, stream_id_key
from events.redis_store import RedisEventStore
from tests.contract.log_helpers import config_of, entries, later, lives, run, snapshots, whole_log
from tests.helpers import submitted


def test_a_pass_archives_whole_segments_then_trims(store_url: str, tmp_path: Path) -> None:
    """120 events in segments of 50: three files, each whole, holding exactly what left the stream;
    the whole log reads back once, in order."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        await lives(store, 40)
        covers = await snapshots(store)
        before = entries(await store.read_flat("0-0", 10_000, covers))
        assert len(before) == 120
        report = await archive_once(store, archive, config_of(50), later(), flush=True)
        assert (report.segments, report.events, report.error) == (3, 120, "")
        state = await store.log_state()
        assert state["archived_to"] == covers and state["segments"] == "3"
        assert int(state["archived"]) == len(before)
        live = entries(await store.read_flat("0-0", 10_000))
        # Only what came after the cutoff is left: the snapshots' events and the archive's.
        assert [e[1][1] for e in live] == ["snapshot.taken"] * 2 + ["log.archived"] * 3
        assert report.trimmed == 120
        found = archive.segments()
        assert len(found) == 3 and found[-1].name == state["segment"]
        assert [e for s in found for e in archive.open(s).entries] == before
        assert [len(archive.open(s).entries) for s in found] == [50, 50, 20]
        assert await whole_log(store, archive) == before + live
        # The chain: each segment names the one before it.
        marks = [s.event for s in await store.read() if isinstance(s.event, LogArchived)]
        assert [m.prev_digest for m in marks] == ["", marks[0].digest, marks[1].digest]
        again = await archive_once(store, archive, config_of(50), later(), flush=True)
        assert again.segments == 0 and len(archive.segments()) == 3

    run(store_url, body)


def test_the_cutoff_keeps_what_is_young_or_not_covered_by_every_snapshot(
    store_url: str, tmp_path: Path
) -> None:
    """No snapshot, or one actor's only: nothing; then no further than the older snapshot and
    than `live_seconds`; a partial segment waits until it is old enough, unless flushed."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        await lives(store, 10)
        config = config_of(1000)
        assert (await archive_once(store, archive, config, later(), flush=True)).cutoff == ""
        middle = entries(await store.read_flat("0-0", 15))[-1][0]
        await store.save_snapshot("queue", await store.last_id(), "{}")
        assert (await archive_once(store, archive, config, later(), flush=True)).segments == 0
        await store.save_snapshot("keypool", middle, "{}")
        report = await archive_once(store, archive, config, later(), flush=True)
        assert report.cutoff == middle and report.events == 15
        assert await store.log_field("archived_to") == middle
        covers = await snapshots(store)
        # Older than live_seconds, but not by an hour: the partial segment waits.
        hour = config_of(1000, live=3600.0)
        assert (await archive_once(store, archive, hour, time.time() + 3600.0 + 2)).segments == 0
        assert (await archive_once(store, archive, hour, time.time() + 2 * 3600.0 + 5)).segments == 1
        assert await store.log_field("archived_to") == covers

    run(store_url, body)


def test_cutoff_is_the_oldest_of_time_and_snapshots() -> None:
    """The pure cutoff: None without both snapshots, else the smallest of the three points."""
    assert cutoff({"snapshot:queue": "5-0"}, 10.0, 1.0) is None
    both = {"snapshot:queue": "9000-3", "snapshot:keypool": "9500-0"}
    assert cutoff(both, 100.0, 1.0) == "9000-3"
    assert cutoff(both, 9.0, 1.0) == f"7999-{2**64 - 1}"
    assert redacted("s3://KEY:SECRET@bucket/genqueue?token=x") == "s3://bucket/genqueue"


def test_a_segment_written_but_never_recorded_is_adopted(store_url: str, tmp_path: Path) -> None:
    """A crash after the write and before `log.archived`: the next pass adopts the file (one event
    for it, the stream trimmed), nothing lost or archived twice."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        await lives(store, 20)
        covers = await snapshots(store)
        before = entries(await store.read_flat("0-0", 10_000, covers))
        archive.write(before[:50], "")  # the pass died here
        report = await archive_once(store, archive, config_of(50), later(), flush=True)
        assert (report.adopted, report.segments, report.removed) == (1, 2, 0)
        marks = [s.event for s in await store.read() if isinstance(s.event, LogArchived)]
        assert [(m.first, m.last) for m in marks] == [
            (before[0][0], before[49][0]),
            (before[50][0], before[-1][0]),
        ]
        assert [e for s in archive.segments() for e in archive.open(s).entries] == before
        whole = await whole_log(store, archive)
        assert whole[:60] == before and len(whole) == 60 + 2 + 2  # the snapshots' events, two log.archived
        assert [stream_id_key(e[0]) for e in whole] == sorted({stream_id_key(e[0]) for e in whole})

    run(store_url, body)


def test_a_pass_cut_short_between_log_archived_and_the_trim_loses_and_repeats_nothing(
    store_url: str, tmp_path: Path
) -> None:
    """A crash after a segment's `log.archived` and before its XTRIM: the whole log reads the
    same, each entry once (the stream's copies of archived entries are cut by id); the next pass
    trims to the archived point, leaves that segment as it is, archives the rest, and the whole
    log then holds the same entries once, in order."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        await lives(store, 20)
        covers = await snapshots(store)
        before = await whole_log(store, archive)
        assert len(before) == 60 + 2  # the tasks' events, the snapshots'
        first = entries(await store.read_flat("0-0", 50, covers))
        sealed = archive.write(first, "")
        crashed = _Pass(store, archive, later())
        await crashed.mark(sealed)  # the pass died here: recorded, never trimmed
        assert await store.log_field("archived_to") == first[-1][0]
        assert crashed.report.trimmed == 0
        assert await store._r.xlen(store.keys.events) == len(before) + 1
        cut_short = await whole_log(store, archive)
        assert cut_short[:-1] == before and cut_short[-1][1][1] == "log.archived"
        written = segment_bytes(tmp_path, archive)
        report = await archive_once(store, archive, config_of(50), later(), flush=True)
        assert (report.adopted, report.removed, report.segments, report.events) == (0, 0, 1, 10)
        assert report.trimmed == 50 + 10  # the trim cut short, then the second segment's
        after = await whole_log(store, archive)
        assert after[:-1] == cut_short and after[-1][1][1] == "log.archived"
        ids = [entry_id for entry_id, _ in after]
        assert ids == sorted(set(ids), key=stream_id_key)
        kept = segment_bytes(tmp_path, archive)
        assert {name: kept[name] for name in written} == written  # the recorded segment, untouched
        opened = [archive.open(s) for s in archive.segments()]
        assert [e for o in opened for e in o.entries] == before[:60]
        assert opened[1].prev_digest == sealed.digest
        live = entries(await store.read_flat("0-0", 10_000))
        assert [e[1][1] for e in live] == ["snapshot.taken"] * 2 + ["log.archived"] * 2

    run(store_url, body)


def segment_bytes(tmp_path: Path, archive: Archive) -> dict[str, bytes]:
    """Each segment file's name and bytes."""
    return {s.name: (tmp_path / "archive" / s.name).read_bytes() for s in archive.segments()}


def test_a_half_written_or_foreign_segment_beyond_the_archived_point_is_redone(
    store_url: str, tmp_path: Path
) -> None:
    """A truncated file under a segment's name, and a whole one that does not chain, are removed
    and the segment written again, whole."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        await lives(store, 20)
        covers = await snapshots(store)
        before = entries(await store.read_flat("0-0", 10_000, covers))
        archive.write(before[:50], "not the chain")
        half = Segment(before[50][0], before[-1][0])
        whole = (tmp_path / "archive" / archive.segments()[0].name).read_bytes()
        (tmp_path / "archive" / half.name).write_bytes(whole[: len(whole) // 2])
        report = await archive_once(store, archive, config_of(50), later(), flush=True)
        assert (report.removed, report.adopted, report.segments) == (2, 0, 2)
        opened = [archive.open(s) for s in archive.segments()]
        assert [e for o in opened for e in o.entries] == before
        assert opened[0].prev_digest == "" and opened[1].prev_digest == opened[0].digest

    run(store_url, body)


def test_an_unavailable_archive_trims_nothing_raises_an_alert_and_submits_go_on(
    store_url: str, tmp_path: Path
) -> None:
    """An archive under a regular file: the stream stays whole, one alert is raised, a submit is
    accepted; the next good pass archives and resolves it."""
    (tmp_path / "a-file").write_bytes(b"")
    broken = Archive(f"file://{tmp_path}/a-file/archive")
    good = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        await lives(store, 5)
        await snapshots(store)
        length = await store._r.xlen(store.keys.events)
        for _ in range(2):
            report = await archive_once(store, broken, config_of(50), later(), flush=True)
            assert report.segments == 0 and report.error
        assert await store._r.xlen(store.keys.events) == length + 1  # the alert, nothing trimmed
        assert await store.log_field("archived_to") is None
        assert [a["name"] for a in await store.alerts()] == [ALERT]
        receipt = await store.submit(submitted(at=time.time()))
        assert receipt.refused is None and receipt.id
        await snapshots(store)
        report = await archive_once(store, good, config_of(50), later(), flush=True)
        assert report.segments == 1 and report.error == ""
        assert await store.alerts() == []
        kinds = [type(s.event) for s in await store.read()]
        assert kinds.count(AlertRaised) == 0 and kinds.count(AlertResolved) == 1  # raised went to the archive
        archived = [e for s in good.segments() for e in good.open(s).entries]
        assert sum(e[1][1] == "alert.raised" for e in archived) == 1

    run(store_url, body)


def test_a_half_written_segment_is_never_read_as_whole(store_url: str, tmp_path: Path) -> None:
    """The reader refuses an archived segment cut short, and ignores a stray file past the
    archived point."""
    archive = Archive(f"file://{tmp_path}/archive")

    async def body(store: RedisEventStore) -> None:
        await lives(store, 10)
        await snapshots(store)
        await archive_once(store, archive, config_of(50), later(), flush=True)
        expected = await whole_log(store, archive)
        stray = Segment("99999999999999-0", "99999999999999-5")
        (tmp_path / "archive" / stray.name).write_bytes(b"\x28\xb5\x2f\xfd half")
        assert await whole_log(store, archive) == expected
        (only,) = [s for s in archive.segments() if s != stray]
        path = tmp_path / "archive" / only.name
        path.write_bytes(path.read_bytes()[:-8])
        with pytest.raises(SegmentError):
            await whole_log(store, archive)
        with pytest.raises(ArchiveError):
            archive.open(only)

    run(store_url, body)
