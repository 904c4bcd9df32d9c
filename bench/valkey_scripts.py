"""Valkey's time in genqueue's scripts, per event of a task's life, against the commands they run.

Submits N tasks through the store's submit script (credits on, a welcome grant per new user),
then appends each task's life as the actors do, one kind of event at a time, in the batches
a busy worker or QueueActor sends (`--batch` groups a script call): dispatched (guarded as
queued), token granted, started and succeeded (guarded as running). For each step it prints
the server's microseconds per event in EVALSHA (the whole script) and in the commands the
script ran (`INFO commandstats`), and what is left: the script's own work, reading its
argument and calling the commands.

    python bench/valkey_scripts.py --tasks 2000 --batch 20 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from bench.common import print_figures
from events.admission import Admission
from events.catalogue import Event, TaskDispatched, TaskStarted, TaskSubmitted, TaskSucceeded
from events.key_events import KeyTokenGranted
from events.redis_store import RedisEventStore
from events.store import Expect
from serve_app.valkey import embedded_valkey

PROMPT = "warm film portrait, soft window light, 85 mm"
SCRIPTS = ("evalsha", "evalsha_ro", "eval", "fcall")

Group = tuple[Sequence[Event], dict[str, Expect] | None]


def command_usec(url: str) -> dict[str, tuple[int, int]]:
    """(calls, microseconds) per command so far."""
    with redis.Redis.from_url(url) as client:
        stats: dict[str, Any] = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in stats.items()}


def per_event(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], n: int
) -> dict[str, float]:
    """Microseconds per event in the scripts, in the commands they ran, and the difference."""
    spent = {k: after[k][1] - before.get(k, (0, 0))[1] for k in after if k != "info"}
    scripts = sum(v for k, v in spent.items() if k in SCRIPTS)
    commands = sum(v for k, v in spent.items() if k not in SCRIPTS)
    return {
        "script_us": round(scripts / n, 1),
        "commands_us": round(commands / n, 1),
        "own_us": round((scripts - commands) / n, 1),
    }


async def run(url: str, tasks: int, batch: int) -> dict[str, Any]:
    store = RedisEventStore.from_url(url, "bench")
    await store.load_scripts()
    ids = [uuid.uuid4().hex for _ in range(tasks)]
    admission = Admission(price=1, default_grant=10)
    figures: dict[str, Any] = {"tasks": tasks, "batch": batch}
    before = command_usec(url)
    for i, task_id in enumerate(ids):
        event = TaskSubmitted(
            task_id=task_id,
            user_id=f"user-{i % 500}",
            kind="photography",
            prompt=PROMPT,
            inputs={"person": f"tasks/{task_id}/person.png"},
            at=time.time(),
        )
        await store.submit(event, admission)
    after = command_usec(url)
    figures["submit"] = per_event(before, after, tasks)
    now = time.time()
    steps: dict[str, Callable[[str], Group]] = {
        "dispatched": lambda t: (
            [TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=now + 600, at=now)],
            {t: Expect("queued", 0)},
        ),
        "granted": lambda t: (
            [
                KeyTokenGranted(
                    pool="p1", key_id="k1", task_id=t, attempt=1, capacity=600, window=60.0, at=now
                )
            ],
            None,
        ),
        "started": lambda t: (
            [TaskStarted(task_id=t, attempt=1, pool="p1", key_id="k1", waited=0.01, at=now)],
            {t: Expect("running", 1)},
        ),
        "succeeded": lambda t: (
            [
                TaskSucceeded(
                    task_id=t,
                    attempt=1,
                    result=f"tasks/{t}/result-1.png",
                    mime_type="image/png",
                    elapsed=0.5,
                    held=0.6,
                    kind="photography",
                    pool="p1",
                    at=now,
                )
            ],
            {t: Expect("running", 1)},
        ),
    }
    for name, make in steps.items():
        before = command_usec(url)
        for start in range(0, tasks, batch):
            results = await store.append_many([make(t) for t in ids[start : start + batch]])
            if any(r is None for r in results):
                raise SystemExit(f"{name}: a guard refused; the bench's life of a task is out of date")
        figures[name] = per_event(before, command_usec(url), tasks)
    await store.close()
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--batch", type=int, default=20, help="groups in one append script call")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, embedded_valkey(Path(data_dir)) as url:
        figures = asyncio.run(run(url, args.tasks, args.batch))
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
