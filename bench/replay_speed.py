"""Replay speed by stage: how fast the event log is read, decoded and audited.

Writes --events events into a fresh embedded Valkey (a grant per user, then for each task
submitted, charged, dispatched, started and succeeded, as the engine writes them), then
times, each as the median of --runs runs:
  read    every entry, in the pages `genqueue audit` reads (`RedisEventStore.read_flat`);
  decode  those entries to events (`events.codec.decode_flat`), already in memory;
  audit   the decoded events through the auditor (`actors.audit.Auditor`);
  end     `genqueue audit` end to end (`serve_app.cli.ops.run_audit`).
Then it archives the oldest --archived share of the log (segments of --segment events, each
written, read back, recorded by `log.archived` and trimmed, as the archiving pass does) and
times, over the archive then the stream:
  archived_read  every entry through `events.log_reader.pages` (segments decoded and checked);
  archived_end   `genqueue audit` end to end, the hash chain checked.
--profile prints the top frames of one end-to-end audit under cProfile.

    python bench/replay_speed.py --events 1000000 [--archived 0.5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.audit import Auditor
from bench.common import print_figures
from events.archive import Archive
from events.catalogue import (
    CreditsCharged,
    CreditsGranted,
    LogArchived,
    StoredEvent,
    TaskDispatched,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from events.codec import decode_flat, encode
from events.log_reader import pages
from events.redis_store import RedisEventStore
from serve_app.cli.ops import run_audit
from serve_app.valkey import embedded_valkey

USERS = 97


def task_events(task_id: str, user: str, now: float) -> list[Any]:
    """One finished task as the engine records it."""
    return [
        TaskSubmitted(
            task_id=task_id,
            user_id=user,
            kind="photography",
            prompt="a portrait",
            inputs={"person": "x"},
            at=now,
        ),
        CreditsCharged(user_id=user, task_id=task_id, amount=1, at=now),
        TaskDispatched(task_id=task_id, attempt=1, worker=0, lease_deadline=now + 60, at=now),
        TaskStarted(task_id=task_id, attempt=1, pool="p", key_id="p#1", at=now),
        TaskSucceeded(task_id=task_id, attempt=1, result="r", mime_type="image/png", elapsed=0.5, at=now),
    ]


async def write(url: str, namespace: str, events: int) -> int:
    """Append about `events` events in large pipelines; the number written."""
    store = RedisEventStore.from_url(url, namespace)
    now = time.time()
    batch = [encode(CreditsGranted(user_id=f"u{i}", amount=10**9, at=now)) for i in range(USERS)]
    written = 0
    try:
        for i in range(max(1, (events - USERS) // 5)):
            batch += [encode(e) for e in task_events(uuid.uuid4().hex, f"u{i % USERS}", now)]
            if len(batch) >= 5000:
                written += await _flush(store, batch)
        written += await _flush(store, batch)
    finally:
        await store.close()
    return written


async def _flush(store: RedisEventStore, batch: list[dict[str, str]]) -> int:
    async with store._r.pipeline(transaction=False) as pipe:
        for fields in batch:
            pipe.xadd(store.keys.events, fields)
        await pipe.execute()
    n = len(batch)
    batch.clear()
    return n


async def read_all(url: str, namespace: str) -> list[list[Any]]:
    """Every entry, read in the pages the audit reads."""
    store = RedisEventStore.from_url(url, namespace)
    out: list[list[Any]] = []
    try:
        after = "0-0"
        while page := await store.read_flat(after, 20_000):
            out += page
            after = page[-1][0]
    finally:
        await store.close()
    return out


async def archive_oldest(url: str, namespace: str, archive: Archive, events: int, size: int) -> int:
    """Archive the oldest `events` entries in segments of `size`, each written and read back,
    recorded by `log.archived`, then trimmed from the stream; the archive's bytes."""
    store = RedisEventStore.from_url(url, namespace)
    after, digest, written, total = "0-0", "", 0, 0
    try:
        while written < events:
            page = await store.read_flat(after, min(size, events - written))
            sealed = await asyncio.to_thread(archive.write, [(i, f) for i, f in page], digest)
            segment = sealed.segment
            done = LogArchived(
                segment=segment.name,
                first=segment.first,
                last=segment.last,
                count=sealed.count,
                digest=sealed.digest,
                prev_digest=digest,
                bytes=sealed.bytes,
                at=time.time(),
            )
            await store.append([done])
            await store.trim_to(segment.last)
            after, digest = segment.last, sealed.digest
            written += sealed.count
            total += sealed.bytes
    finally:
        await store.close()
    return total


async def read_through(url: str, namespace: str, archive: Archive) -> int:
    """Every entry, the archive's then the stream's, as the audit reads them; how many."""
    store = RedisEventStore.from_url(url, namespace)
    count = 0
    try:
        async for page in pages(store, archive):
            count += len(page)
    finally:
        await store.close()
    return count


def decode_all(raw: list[list[Any]]) -> list[StoredEvent]:
    """The entries decoded to events."""
    return [StoredEvent(entry_id, decode_flat(flat)) for entry_id, flat in raw]


def audit_all(events: list[StoredEvent]) -> int:
    """The events through the auditor; the number fed."""
    auditor = Auditor()
    for stored in events:
        auditor.feed(stored)
    report = auditor.finish()
    assert report.ok, "the generated log must audit clean"
    return auditor.events


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """(median seconds over `runs` calls, the last result)."""
    seconds, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), result


def stages(url: str, namespace: str, runs: int) -> tuple[float, float, float]:
    """Median seconds of the live log's read, decode and audit, each alone."""
    read_s, raw = timed(lambda: asyncio.run(read_all(url, namespace)), runs)
    decode_s, events = timed(lambda: decode_all(raw), runs)
    audit_s, _ = timed(lambda: audit_all(events), runs)
    return read_s, decode_s, audit_s


def profile(url: str, namespace: str, top: int, archive: Archive | None = None) -> str:
    """The top frames (by own time) of one end-to-end audit."""
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(run_audit(url, namespace, archive=archive))
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    """Write the log, time each stage, print the figures (and the profile if asked)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--archived", type=float, default=0.5, help="share of the log archived (0: none)")
    p.add_argument("--segment", type=int, default=100_000, help="events per archive segment")
    p.add_argument("--profile", action="store_true", help="print cProfile's top frames of one audit")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args()
    ns = "speed"
    home = Path(tempfile.mkdtemp(prefix="genqueue-replay-speed-"))
    archive = Archive(f"file://{home}/archive")
    archived: dict[str, Any] = {}
    with embedded_valkey(home / "valkey") as url:
        written = asyncio.run(write(url, ns, args.events))
        read_s, decode_s, audit_s = stages(url, ns, args.runs)
        end_s, result = timed(lambda: asyncio.run(run_audit(url, ns)), args.runs)
        assert result.report.ok and result.events == written
        if args.archived > 0:
            share = int(written * args.archived)
            size = asyncio.run(archive_oldest(url, ns, archive, share, args.segment))
            whole = written + -(-share // args.segment)  # and a log.archived per segment
            through_s, count = timed(lambda: asyncio.run(read_through(url, ns, archive)), args.runs)
            assert count == whole
            half_s, result = timed(lambda: asyncio.run(run_audit(url, ns, archive=archive)), args.runs)
            assert result.report.ok and not result.violations and result.events == whole
            archived = {
                "archived_events": share,
                "archive_bytes_per_event": round(size / share, 1),
                "archived_read_events_per_second": round(whole / through_s),
                "archived_end_to_end_events_per_second": round(whole / half_s),
                "archived_end_to_end_seconds": round(half_s, 2),
            }
        text = profile(url, ns, 25, archive) if args.profile else ""

    def rate(seconds: float) -> int:
        return round(written / seconds)

    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "python"
    figures = {
        "events": written,
        "redis_parser": parser,
        "read_events_per_second": rate(read_s),
        "decode_events_per_second": rate(decode_s),
        "audit_events_per_second": rate(audit_s),
        "end_to_end_events_per_second": rate(end_s),
        "end_to_end_seconds": round(end_s, 2),
        **archived,
    }
    print_figures(figures, args.json)
    if text:
        print(text)


if __name__ == "__main__":
    main()
