"""How long a QueueActor snapshot stops its loop, at 1,000 to 100,000 waiting tasks.

Before: the whole snapshot was built and serialised on the loop (`json.dumps(snapshot(state))`).
Now: the loop makes a shallow copy (`frozen_copy`, `places`) and a thread writes the document;
a ticker on the loop measures the longest gap between its ticks while that thread runs.

    python bench/snapshot_stall.py [--tasks 1000,10000,100000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.queue.snapshots import frozen_copy, places, write
from actors.queue.state import QueueState, apply, snapshot
from events.catalogue import StoredEvent, TaskSubmitted


def waiting_state(n: int) -> QueueState:
    """A state with n waiting tasks, each with a prompt and an input image reference."""
    state = QueueState()
    for i in range(n):
        tid = f"{i:032x}"
        event = TaskSubmitted(
            task_id=tid,
            user_id=f"user-{i % 500}",
            kind="photography",
            prompt="a studio portrait, soft light, 85 mm",
            inputs={"person": f"tasks/{tid}/person.png"},
            at=1_700_000_000.0 + i,
        )
        apply(state, StoredEvent(f"1-{i}", event))
    return state


async def off_loop(state: QueueState) -> tuple[float, float, float]:
    """(loop stall for the copy, longest gap between ticks while the thread writes, thread seconds)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    copy, waiting = frozen_copy(state), places(state)
    copied = time.perf_counter() - t0
    t1 = time.perf_counter()
    await asyncio.to_thread(write, copy, waiting)
    written = time.perf_counter() - t1
    done.set()
    await tick
    return copied, max(gaps) - 0.001, written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.tasks.split(",")):
        state = waiting_state(n)
        before, copies, gaps, writes = [], [], [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            json.dumps(snapshot(state), separators=(",", ":"))
            before.append(time.perf_counter() - t0)
            copied, gap, written = asyncio.run(off_loop(state))
            copies.append(copied)
            gaps.append(gap)
            writes.append(written)
        rows.append(
            {
                "tasks": n,
                "blocking_ms": round(statistics.median(before) * 1000, 1),
                "copy_ms": round(statistics.median(copies) * 1000, 1),
                "longest_gap_ms": round(statistics.median(gaps) * 1000, 1),
                "thread_ms": round(statistics.median(writes) * 1000, 1),
            }
        )
    if args.json:
        print(json.dumps({"snapshot_stall": rows}))
        return
    print(
        "| waiting tasks | snapshot on the loop (before) | copy on the loop "
        "| longest loop gap meanwhile | written in thread |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tasks']:,} | {r['blocking_ms']} ms | {r['copy_ms']} ms "
            f"| {r['longest_gap_ms']} ms | {r['thread_ms']} ms |"
        )


if __name__ == "__main__":
    main()
