"""Replay rate: events per second folded back into state from a stream of --events events.

Writes a history of finished tasks (four events each) into a fresh embedded Valkey, then
times the two replays genqueue makes over a whole stream:
  queue fold  what a QueueActor does on a restart without a snapshot: read the stream in
              pages of 10,000 (`RedisEventStore.read`) and apply each event to `QueueState`;
  audit       what `genqueue audit` does: read raw pages, decode, check every invariant.

    python bench/replay.py --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.queue.state import QueueState, apply
from bench.common import print_figures
from bench.recovery import audit_rate, write_history
from events.redis_store import RedisEventStore
from serve_app.valkey import embedded_valkey


async def fold_rate(url: str, namespace: str) -> tuple[int, float, QueueState]:
    """(events, seconds, state) for a full replay into the queue's state, as on a restart."""
    store = RedisEventStore.from_url(url, namespace)
    state = QueueState()
    events = 0
    t0 = time.perf_counter()
    try:
        while batch := await store.read(state.last_id, count=10_000):
            for stored in batch:
                apply(state, stored)
            events += len(batch)
    finally:
        await store.close()
    return events, time.perf_counter() - t0, state


def main() -> None:
    """Write the history, time both replays, print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args()
    with embedded_valkey(Path(tempfile.mkdtemp(prefix="genqueue-replay-"))) as url:
        t0 = time.perf_counter()
        written = asyncio.run(write_history(url, "replay", max(1, args.events // 4), 0))
        write_seconds = time.perf_counter() - t0
        events, fold_seconds, state = asyncio.run(fold_rate(url, "replay"))
        audited, audit_seconds = asyncio.run(audit_rate(url, "replay"))
    figures = {
        "events": written,
        "write_seconds": round(write_seconds, 1),
        "fold_events": events,
        "fold_seconds": round(fold_seconds, 1),
        "fold_events_per_second": round(events / fold_seconds),
        "audit_events": audited,
        "audit_seconds": round(audit_seconds, 1),
        "audit_events_per_second": round(audited / audit_seconds),
        "succeeded_after_fold": state.succeeded,
    }
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
