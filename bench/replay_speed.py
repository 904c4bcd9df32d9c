"""Replay speed by stage: how fast the event log is read, decoded and audited.

Writes --events events into a fresh embedded Valkey (a grant per user, then for each task
submitted, charged, dispatched, started and succeeded, as the engine writes them), then
times, each as the median of --runs runs:
  read    every entry, in the pages `genqueue audit` reads (`RedisEventStore.read_flat`);
  decode  those entries to events (`events.codec.decode_flat`), already in memory;
  audit   the decoded events through the auditor (`actors.audit.Auditor`);
  end     `genqueue audit` end to end (`serve_app.cli.ops.run_audit`).
--profile prints the top frames of one end-to-end audit under cProfile.

    python bench/replay_speed.py --events 1000000 [--profile]
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
from events.catalogue import (
    CreditsCharged,
    CreditsGranted,
    StoredEvent,
    TaskDispatched,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from events.codec import decode_flat, encode
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


def profile(url: str, namespace: str, top: int) -> str:
    """The top frames (by own time) of one end-to-end audit."""
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(run_audit(url, namespace))
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    """Write the log, time each stage, print the figures (and the profile if asked)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="print cProfile's top frames of one audit")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args()
    ns = "speed"
    with embedded_valkey(Path(tempfile.mkdtemp(prefix="genqueue-replay-speed-"))) as url:
        written = asyncio.run(write(url, ns, args.events))
        read_s, raw = timed(lambda: asyncio.run(read_all(url, ns)), args.runs)
        decode_s, events = timed(lambda: decode_all(raw), args.runs)
        audit_s, _ = timed(lambda: audit_all(events), args.runs)
        end_s, result = timed(lambda: asyncio.run(run_audit(url, ns)), args.runs)
        assert result.report.ok and result.events == written
        text = profile(url, ns, 25) if args.profile else ""

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
    }
    print_figures(figures, args.json)
    if text:
        print(text)


if __name__ == "__main__":
    main()
