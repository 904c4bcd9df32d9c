"""The operator CLI over a real store: audit, replay and export from the event log alone."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path

from typer.testing import CliRunner

from events.catalogue import Event, KeyTokenGranted, TaskDispatched, TaskStarted, TaskSucceeded
from events.redis_store import RedisEventStore
from serve_app.cli.main import app
from tests.helpers import submitted

runner = CliRunner()


def _populate(url: str, namespace: str, events: list[Event], raw: list[dict[str, str]] | None = None) -> None:
    async def main() -> None:
        store = RedisEventStore.from_url(url, namespace)
        await store.append(events)
        for fields in raw or []:
            await store._r.xadd(store.keys.events, fields)
        await store.close()

    asyncio.run(main())


def _life(task: str, at: float) -> list[Event]:
    return [
        submitted(task, at=at),
        TaskDispatched(task_id=task, attempt=1, worker=0, lease_deadline=at + 60, at=at + 0.1),
        KeyTokenGranted(pool="p", key_id="p#1", task_id=task, attempt=1, capacity=2, window=1.0, at=at + 0.2),
        TaskStarted(task_id=task, attempt=1, pool="p", key_id="p#1", at=at + 0.2),
        TaskSucceeded(task_id=task, attempt=1, result="r", mime_type="image/png", elapsed=0.5, at=at + 0.7),
    ]


def test_audit_passes_a_clean_log_and_names_violations(store_url: str) -> None:
    """A clean log exits 0; a window overrun and an unknown event type exit 1 and are named."""
    clean = f"ops{uuid.uuid4().hex[:8]}"
    _populate(
        store_url, clean, [*_life("a" * 32, 100.0), *_life("b" * 32, 200.0), submitted("c" * 32, at=300.0)]
    )
    ok = runner.invoke(app, ["audit", "--redis-url", store_url, "--namespace", clean, "--slots", "1"])
    assert ok.exit_code == 0, ok.output
    assert "every invariant holds" in ok.output and "still waiting or running" in ok.output

    broken = f"ops{uuid.uuid4().hex[:8]}"
    crowded = [e for t in ("d", "e", "f") for e in _life(t * 32, 100.0)]
    _populate(store_url, broken, crowded, raw=[{"type": "task.exploded", "v": "1", "task": "", "data": "{}"}])
    bad = runner.invoke(app, ["audit", "--redis-url", store_url, "--namespace", broken])
    assert bad.exit_code == 1
    assert "pool p: 3 calls in one window, limit 2" in bad.output
    assert "unknown event type 'task.exploded'" in bad.output


def test_replay_and_export(store_url: str, tmp_path: Path) -> None:
    """replay --task prints the timeline, replay --at the queue at a moment, export writes JSON lines."""
    namespace = f"ops{uuid.uuid4().hex[:8]}"
    task = "1" * 32
    _populate(store_url, namespace, _life(task, 100.0))
    timeline = runner.invoke(
        app, ["replay", "--task", task, "--redis-url", store_url, "--namespace", namespace]
    )
    assert timeline.exit_code == 0, timeline.output
    for name in ("task.submitted", "task.dispatched", "key.token_granted", "task.started", "task.succeeded"):
        assert name in timeline.output
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    now = later.isoformat(timespec="seconds").replace("+00:00", "")
    state = runner.invoke(app, ["replay", "--at", now, "--redis-url", store_url, "--namespace", namespace])
    assert state.exit_code == 0, state.output
    assert "succeeded 1" in state.output
    before = runner.invoke(
        app, ["replay", "--at", "2001-01-01T00:00:00", "--redis-url", store_url, "--namespace", namespace]
    )
    assert "succeeded 0" in before.output
    out = tmp_path / "events.jsonl"
    exported = runner.invoke(
        app, ["events", "export", "--out", str(out), "--redis-url", store_url, "--namespace", namespace]
    )
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["type"] == "task.submitted" and len(lines) == 5
    assert lines[-1]["data"]["result"] == "r"
    neither = runner.invoke(app, ["replay", "--redis-url", store_url, "--namespace", namespace])
    assert neither.exit_code == 2
