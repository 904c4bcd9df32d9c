"""How long a QueueActor snapshot stops its loop, and the store, at 1,000 to 100,000 waiting tasks.

Before: the whole snapshot was built and serialised on the loop (`json.dumps(snapshot(state))`).
Now: the loop makes a shallow copy (`frozen_copy`, `places`) and a thread writes the document;
a ticker on the loop measures the longest gap between its ticks while that thread runs.

The store (an embedded Valkey): the longest command the server ran while the document was
saved (its SLOWLOG, every command logged), which every other client waits out. Before: the
parts were joined in a scratch string that one script copied into the snapshot list
(LPUSH of its GET). Now: the scratch string is renamed into place (`save_snapshot`).

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
from events.redis_store import RedisEventStore


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


# The move before: the joined document copied into the list by one script.
_COPY_INTO_LIST = "redis.call('LPUSH', KEYS[2], redis.call('GET', KEYS[1])) redis.call('DEL', KEYS[1])"


async def store_stall(url: str, parts: list[str], copied: bool) -> tuple[float, float]:
    """(the longest server command while 3 snapshots are saved, ms; seconds a save took)."""
    store = RedisEventStore.from_url(url, f"stall{time.time_ns()}")
    r = store._r
    await r.config_set("slowlog-log-slower-than", 0)
    await r.config_set("slowlog-max-len", 10_000)
    await r.slowlog_reset()
    t0 = time.perf_counter()
    for i in range(3):
        if copied:
            key = store.keys.snapshots("queue")
            await r.delete(f"{key}:writing")
            for start in range(0, len(parts), 16):
                async with r.pipeline(transaction=False) as pipe:
                    for part in parts[start : start + 16]:
                        pipe.append(f"{key}:writing", part)
                    await pipe.execute()
            await r.eval(_COPY_INTO_LIST, 2, f"{key}:writing", key)
            await r.ltrim(key, 0, 2)
        else:
            await store.save_snapshot("queue", f"1-{i}", parts)
    seconds = (time.perf_counter() - t0) / 3
    longest = max(entry["duration"] for entry in await r.slowlog_get(10_000))
    await r.config_set("slowlog-log-slower-than", 10_000)
    await r.flushdb()
    await store.close()
    return longest / 1000, seconds


def store_rows(sizes: list[int], runs: int) -> list[dict[str, float]]:
    """The store's figures at each size, before and now alternating, medians of `runs`."""
    import tempfile

    from serve_app.valkey import embedded_valkey

    rows = []
    with tempfile.TemporaryDirectory() as data, embedded_valkey(Path(data)) as url:
        for n in sizes:
            state = waiting_state(n)
            parts = write(frozen_copy(state), places(state))
            got: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _ in range(runs):
                for copied in (True, False):
                    got[copied].append(asyncio.run(store_stall(url, parts, copied)))
            rows.append(
                {
                    "tasks": n,
                    "megabytes": round(sum(len(p) for p in parts) / 1e6, 1),
                    "before_longest_ms": round(statistics.median(g[0] for g in got[True]), 1),
                    "longest_ms": round(statistics.median(g[0] for g in got[False]), 1),
                    "before_save_ms": round(statistics.median(g[1] for g in got[True]) * 1000, 1),
                    "save_ms": round(statistics.median(g[1] for g in got[False]) * 1000, 1),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(x) for x in args.tasks.split(",")]
    stores = store_rows(sizes, args.runs)
    rows = []
    for n in sizes:
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
        print(json.dumps({"snapshot_stall": rows, "snapshot_store": stores}))
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
    print()
    print("| waiting tasks | document | longest store command, before / now | a save, before / now |")
    print("|---|---|---|---|")
    for r in stores:
        print(
            f"| {r['tasks']:,} | {r['megabytes']} MB | {r['before_longest_ms']} / {r['longest_ms']} ms "
            f"| {r['before_save_ms']} / {r['save_ms']} ms |"
        )


if __name__ == "__main__":
    main()
