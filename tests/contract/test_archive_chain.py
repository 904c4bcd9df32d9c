"""The archive's hash chain under `genqueue audit`, over the embedded Valkey: an untouched archive
passes; an event edited, a segment dropped, two events reordered or a segment half-written
each fail the audit naming that segment; the CLI reads the archive then the stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from events.archive import Archive, Sealed
from events.redis_store import RedisEventStore
from serve_app.cli.main import app
from serve_app.cli.ops import AuditResult, run_audit
from tests.archiving import archive_upto, finished_tasks, forget_task, rewrite, segment_file

TASKS = 60  # 301 events: 150 archived in segments of 40, 40, 40 and 30, the rest live


@dataclass
class Archived:
    """A namespace whose log is half archived, and where."""

    url: str
    namespace: str
    data_dir: Path
    archive: Archive
    sealed: list[Sealed]
    events: int

    def audit(self) -> AuditResult:
        """`run_audit` over the archive, then the stream."""
        return asyncio.run(run_audit(self.url, self.namespace, archive=self.archive))

    def entries(self, index: int) -> list[tuple[str, list[str]]]:
        """The entries of the `index`th segment, as it was written."""
        opened = self.archive.open(self.sealed[index].segment)
        return [(i, list(f)) for i, f in opened.entries]


@pytest.fixture
def archived(store_url: str, tmp_path: Path) -> Archived:
    """A fresh namespace with TASKS finished tasks, its first 150 events archived."""
    namespace = f"chain{uuid.uuid4().hex[:8]}"
    archive = Archive(f"file://{tmp_path}/data/archive")

    async def main() -> tuple[list[Sealed], int]:
        store = RedisEventStore.from_url(store_url, namespace)
        try:
            await store.append(finished_tasks(TASKS))
            page = await store.read_flat("0-0", 1000)
            sealed = await archive_upto(store, archive, page[149][0], per_segment=40)
            return sealed, len(page) + len(sealed)
        finally:
            await store.close()

    sealed, events = asyncio.run(main())
    return Archived(store_url, namespace, tmp_path / "data", archive, sealed, events)


def violations_naming(result: AuditResult, segment: Sealed) -> list[str]:
    """The audit's violations about the archive, checked to name `segment` first."""
    found = [v for v in result.violations if v.startswith("archive segment")]
    assert found and found[0].startswith(f"archive segment {segment.segment.name} does not match"), found
    return found


def test_an_untouched_archive_passes_and_is_read_with_the_stream(archived: Archived) -> None:
    """Every event is read once, archive and live: the audit sees every task end once."""
    result = archived.audit()
    assert result.violations == [] and result.report.ok
    assert result.events == archived.events
    assert result.report.submitted == TASKS and result.report.ended == {"succeeded": TASKS}


def test_an_edited_event_names_its_segment(archived: Archived) -> None:
    """One event's data changed and the segment encoded again (whole, with a new digest)."""
    entries = archived.entries(1)
    at = next(i for i, (_, fields) in enumerate(entries) if fields[1] == "credits.charged")
    entry_id, fields = entries[at]
    fields[-1] = fields[-1].replace('"amount":1', '"amount":0')
    assert fields[-1] != archived.entries(1)[at][1][-1]
    entries[at] = (entry_id, fields)
    rewrite(archived.archive, archived.sealed[1].segment.name, entries, archived.sealed[1].prev_digest)
    found = violations_naming(archived.audit(), archived.sealed[1])
    assert "its log.archived recorded" in found[0]


def test_a_dropped_segment_is_named(archived: Archived) -> None:
    """Segment 2's file deleted: the audit names it as recorded but missing."""
    segment_file(archived.archive, archived.sealed[2].segment.name).unlink()
    found = violations_naming(archived.audit(), archived.sealed[2])
    assert "missing from the archive" in found[0]


def test_two_reordered_events_name_their_segment(archived: Archived) -> None:
    """Two events inside segment 3 swapped, the segment encoded again."""
    entries = archived.entries(3)
    entries[10], entries[11] = entries[11], entries[10]
    rewrite(archived.archive, archived.sealed[3].segment.name, entries, archived.sealed[3].prev_digest)
    violations_naming(archived.audit(), archived.sealed[3])


def test_a_half_written_segment_is_never_read_as_whole(archived: Archived) -> None:
    """Segment 1 cut in half (a write that stopped): an error naming it, not a shorter log."""
    path = segment_file(archived.archive, archived.sealed[1].segment.name)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    found = violations_naming(archived.audit(), archived.sealed[1])
    assert "not a whole zstd frame" in found[0]


def test_the_cli_reads_the_archive_and_exits_1_naming_a_tampered_segment(
    archived: Archived, tmp_path: Path
) -> None:
    """audit, replay --task, replay --at and events export read the archive of --data-dir, then
    the stream; a tampered segment makes the audit exit 1 with one line naming it."""
    where = [
        "--redis-url",
        archived.url,
        "--namespace",
        archived.namespace,
        "--data-dir",
        str(archived.data_dir),
    ]
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", *where])
    assert ok.exit_code == 0, ok.output
    assert f"{archived.events:,} in" in ok.output

    first = json.loads(archived.entries(0)[1][1][-1])["task_id"]  # archived, and forgotten below
    forget(archived, first)
    timeline = runner.invoke(app, ["replay", "--task", first, *where])
    assert timeline.exit_code == 0, timeline.output
    assert "task.submitted" in timeline.output and "task.succeeded" in timeline.output
    state = runner.invoke(app, ["replay", "--at", "2999-01-01T00:00:00", *where])
    assert state.exit_code == 0 and f"succeeded {TASKS}" in state.output, state.output
    out = tmp_path / "log.jsonl"
    exported = runner.invoke(app, ["events", "export", "--out", str(out), *where])
    assert exported.exit_code == 0, exported.output
    assert len(out.read_text().splitlines()) == archived.events

    segment_file(archived.archive, archived.sealed[0].segment.name).unlink()
    bad = runner.invoke(app, ["audit", *where])
    assert bad.exit_code == 1
    lines = [line for line in bad.output.splitlines() if line.startswith("violation: archive segment")]
    assert len(lines) == 1 and archived.sealed[0].segment.name in lines[0], bad.output
    broken = runner.invoke(app, ["replay", "--at", "2999-01-01T00:00:00", *where])
    assert broken.exit_code == 1 and "cannot read the archive" in broken.output


def forget(archived: Archived, task_id: str) -> None:
    """Delete a task's read models, as the archiving pass does once the archive answers for it."""

    async def main() -> None:
        store = RedisEventStore.from_url(archived.url, archived.namespace)
        try:
            await forget_task(store, task_id, "u1")
        finally:
            await store.close()

    asyncio.run(main())
