"""SSE fan-out: Valkey commands and replica CPU per queue move with N open task streams.

Starts the HTTP app in a thread of this process (no actors) on an embedded Valkey, queues
`--moves` filler tasks ahead of N watched ones and opens one `/watch` stream per watched
task. Then it dispatches the fillers (each dispatch moves every watched task up by one) in
two ways:

- step: one dispatch at a time, each time waiting until every watcher has seen its new
  position: the whole cost of one isolated move;
- stream: `--rate` dispatches a second, then waiting until every watcher has the last one:
  the cost of a move while moves keep coming.

For each N it prints, per move: Valkey commands (INFO commandstats, the driver's own
appends included: compare with N = 0), the app thread's CPU seconds, and how long the last
watcher waited to see a move (step) or the last move (stream).

    python bench/watchers.py --watchers 0 10 1000 --moves 40 --rate 20 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn

from actors.config import Config
from events.catalogue import TaskDispatched
from events.redis_store import RedisEventStore
from serve_app.http.app import create_app
from serve_app.valkey import embedded_valkey
from tests.conftest import free_port
from tests.helpers import make_config, submitted

_ID = re.compile(rb"^id: (\d+)-(-?\d+|None)\s*$")
_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) a thread of this process has used."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def commands(store: RedisEventStore) -> dict[str, int]:
    """Calls per command since the server started (INFO itself left out)."""
    info: dict[str, Any] = await store._r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items() if k != "cmdstat_info"}


class Watcher:
    """One open SSE stream over a bare HTTP/1.0 connection: the newest position it was sent."""

    def __init__(self) -> None:
        self.position: int | None = None
        self.messages = 0
        self.ready = asyncio.Event()

    async def follow(self, port: int, task_id: str) -> None:
        """Read the stream until it closes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /v1/tasks/{task_id}/watch HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"watch {task_id}: {status!r}")
        try:
            while line := await reader.readline():
                if found := _ID.match(line):
                    self.messages += 1
                    self.position = None if found[2] == b"None" else int(found[2])
                    self.ready.set()
        finally:
            writer.close()


async def until(check: Any, limit: float, what: str) -> float:
    """Seconds until `check()` is true; fails after `limit` seconds."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > limit:
            raise TimeoutError(f"{what}: not within {limit} s")
        await asyncio.sleep(0.002)
    return time.monotonic() - began


async def run(config: Config, port: int, server_tid: int, n: int, moves: int, rate: float) -> dict[str, Any]:
    """Both measurements for `n` watchers."""
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    fillers = [submitted(at=1.0 + i) for i in range(2 * moves)]
    watched = [submitted(at=10_000.0 + i) for i in range(n)]
    for i in range(0, len(fillers) + n, 500):
        await store.append((fillers + watched)[i : i + 500])
    watchers = [Watcher() for _ in watched]
    follows = [
        asyncio.ensure_future(w.follow(port, e.task_id)) for w, e in zip(watchers, watched, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 120)
    await until(lambda: all(w.position == len(fillers) + i for i, w in enumerate(watchers)), 60, "settled")
    result: dict[str, Any] = {"watchers": n}

    async def dispatch(task_id: str) -> None:
        now = time.time()
        await store.append(
            [TaskDispatched(task_id=task_id, attempt=1, worker=0, lease_deadline=now + 600, at=now)]
        )

    def moved(k: int) -> bool:
        return all(w.position == len(fillers) - k + i for i, w in enumerate(watchers))

    for mode, batch in (("step", fillers[:moves]), ("stream", fillers[moves:])):
        done = 0 if mode == "step" else moves
        before, cpu, waits = await commands(store), thread_cpu(server_tid), []
        began = time.monotonic()
        for j, filler in enumerate(batch):
            if mode == "step":
                await dispatch(filler.task_id)
                waits.append(await until(lambda k=done + j + 1: moved(k), 60, "a move seen"))
            else:
                await dispatch(filler.task_id)
                await asyncio.sleep(max(0.0, began + (j + 1) / rate - time.monotonic()))
        if mode == "stream":
            waits.append(await until(lambda: moved(2 * moves), 60, "the last move seen"))
        spent = thread_cpu(server_tid) - cpu
        after = await commands(store)
        delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        result[mode] = {
            "commands_per_move": round(sum(delta.values()) / moves, 1),
            "by_command_per_move": {k: round(v / moves, 2) for k, v in sorted(delta.items())},
            "cpu_ms_per_move": round(1000 * spent / moves, 2),
            "seen_p50_ms": round(1000 * sorted(waits)[len(waits) // 2], 1),
            "seen_max_ms": round(1000 * max(waits), 1),
            "messages": sum(w.messages for w in watchers),
        }
    for f in follows:
        f.cancel()
    await asyncio.gather(*follows, return_exceptions=True)
    await store.close()
    return result


def main() -> None:
    """Parse the arguments, serve the app, measure each N, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, nargs="+", default=[0, 10, 1000])
    parser.add_argument("--moves", type=int, default=40)
    parser.add_argument("--rate", type=float, default=20.0, help="dispatches a second in the stream mode")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="genqueue-watchers-") as tmp,
        embedded_valkey(Path(tmp) / "v") as url,
    ):
        results = []
        for n in args.watchers:
            base = make_config(url, str(Path(tmp) / "data"))
            # One admin caller (tokens off) holds every stream.
            config = replace(base, limits=replace(base.limits, max_streams_per_service_token=0))
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
            )
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)
            assert thread.native_id is not None
            try:
                results.append(asyncio.run(run(config, port, thread.native_id, n, args.moves, args.rate)))
            finally:
                server.should_exit = True
                thread.join(timeout=30)
            row = results[-1]
            for mode in ("step", "stream"):
                r = row[mode]
                print(
                    f"N={n:>5} {mode:>6}: {r['commands_per_move']:>8} commands/move, "
                    f"{r['cpu_ms_per_move']:>8} ms CPU/move, seen p50 {r['seen_p50_ms']} ms "
                    f"max {r['seen_max_ms']} ms, {r['messages']} messages",
                    flush=True,
                )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
