"""`genqueue cost` over a real store: upstream calls per pool by outcome, images and their cost,
counted from events appended to the embedded Valkey."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from typer.testing import CliRunner

from events.catalogue import (
    Event,
    KeyTokenGranted,
    TaskAttemptFailed,
    TaskDispatched,
    TaskFailed,
    TaskLateOutcomeIgnored,
    TaskLeaseExpired,
    TaskStarted,
    TaskSucceeded,
    TaskUpstreamThrottled,
)
from events.codec import encode
from events.redis_store import RedisEventStore
from serve_app.cli.cost import read_ledger
from serve_app.cli.main import app
from tests.helpers import submitted

runner = CliRunner()
AT = 1_700_000_000.0


def _attempt(task: str, attempt: int, pool: str) -> list[Event]:
    """Dispatch, token and start of one attempt on `pool`."""
    return [
        TaskDispatched(task_id=task, attempt=attempt, worker=0, lease_deadline=AT + 60, at=AT),
        KeyTokenGranted(
            pool=pool, key_id=f"{pool}#1", task_id=task, attempt=attempt, capacity=10, window=60, at=AT
        ),
        TaskStarted(task_id=task, attempt=attempt, pool=pool, key_id=f"{pool}#1", at=AT),
    ]


def _succeeded(task: str, attempt: int, pool: str) -> TaskSucceeded:
    return TaskSucceeded(
        task_id=task, attempt=attempt, result="r", mime_type="image/png", elapsed=1.0, pool=pool, at=AT
    )


def _throttled(task: str, attempt: int, pool: str, code: int) -> TaskUpstreamThrottled:
    return TaskUpstreamThrottled(
        task_id=task,
        attempt=attempt,
        pool=pool,
        key_id=f"{pool}#1" if pool else "",
        code=code,
        quota="minute" if pool else "none",
        retry_after=0.0,
        order=AT,
        reason="r",
        at=AT,
    )


def _failed(task: str, attempt: int, pool: str, code: int) -> TaskAttemptFailed:
    return TaskAttemptFailed(
        task_id=task, attempt=attempt, error="e", retryable=True, pool=pool, code=code, at=AT
    )


def history() -> list[Event]:
    """Six tasks whose calls cover every outcome the ledger tells apart."""
    a, b, c, d, e, f = (uuid.uuid4().hex for _ in range(6))
    return [
        *(submitted(t, at=AT) for t in (a, b, c, d, e, f)),
        # a: one call on pool a, an image.
        *_attempt(a, 1, "a"),
        _succeeded(a, 1, "a"),
        # b: a 429 on pool b (not charged), then an image from pool a.
        *_attempt(b, 1, "b"),
        _throttled(b, 1, "b", 429),
        *_attempt(b, 2, "a"),
        _succeeded(b, 2, "a"),
        # c: a 503 and a timeout on pool b, then failed.
        *_attempt(c, 1, "b"),
        _failed(c, 1, "b", 503),
        *_attempt(c, 2, "b"),
        _failed(c, 2, "b", 0),
        TaskFailed(task_id=c, attempt=2, error="timeout", at=AT),
        # d: no pool could serve (no call); then a call whose lease expired and whose image came
        # back too late, and a second attempt still running.
        TaskDispatched(task_id=d, attempt=1, worker=0, lease_deadline=AT, at=AT),
        _throttled(d, 1, "", 0),
        *_attempt(d, 2, "a"),
        TaskLeaseExpired(task_id=d, attempt=2, at=AT),
        TaskLateOutcomeIgnored(task_id=d, attempt=2, outcome="task.succeeded", at=AT),
        *_attempt(d, 3, "a"),
        # e: the input could not be read: no call.
        TaskDispatched(task_id=e, attempt=1, worker=0, lease_deadline=AT, at=AT),
        _failed(e, 1, "", 0),
        # f: a 200 without an image on pool b.
        *_attempt(f, 1, "b"),
        _failed(f, 1, "b", 200),
    ]


def append(url: str, namespace: str, events: list[Event], at_ms: int | None = None) -> None:
    """Append events; with `at_ms`, raw at stream ids from that millisecond (an old history)."""

    async def main() -> None:
        store = RedisEventStore.from_url(url, namespace)
        try:
            if at_ms is None:
                await store.append(events)
            else:
                for i, event in enumerate(events):
                    await store._r.xadd(store.keys.events, encode(event), id=f"{at_ms}-{i + 1}")
        finally:
            await store.close()

    asyncio.run(main())


def test_the_ledger_counts_calls_by_pool_and_outcome(store_url: str) -> None:
    """Calls are attempts that held a token; late images count as made, running calls as unended."""
    namespace = f"cost{uuid.uuid4().hex[:8]}"
    append(store_url, namespace, history())
    ledger = asyncio.run(read_ledger(store_url, namespace))
    a, b = ledger.pools["a"], ledger.pools["b"]
    assert dict(a.outcomes) == {"200": 3} and a.no_outcome == 1 and a.calls == 4 and a.images == 3
    assert dict(b.outcomes) == {"429": 1, "503": 1, "no answer": 1, "200 without an image": 1}
    assert b.calls == 4 and b.images == 0
    assert (ledger.calls, ledger.images, ledger.succeeded_tasks, ledger.discarded_images) == (8, 3, 2, 1)
    assert set(ledger.pools) == {"a", "b"}


def test_cost_prints_calls_images_and_cost_per_succeeded_task(store_url: str) -> None:
    """At $0.05 an image: 3 images cost $0.15, $0.075 for each of the 2 tasks that succeeded;
    with --since only the newer history counts."""
    namespace = f"cost{uuid.uuid4().hex[:8]}"
    old = [submitted("0" * 32, at=AT), *_attempt("0" * 32, 1, "a"), _succeeded("0" * 32, 1, "a")]
    append(store_url, namespace, old, at_ms=1_600_000_000_000)  # 2020-09-13
    append(store_url, namespace, history())
    args: list[Any] = ["cost", "--redis-url", store_url, "--namespace", namespace]
    everything = runner.invoke(app, [*args, "--price-per-image", "0.05"], env={"COLUMNS": "200"})
    assert everything.exit_code == 0, everything.output
    assert "$0.20 for 4 image(s); 3 task(s) succeeded ($0.0667 each)" in everything.output
    recent = runner.invoke(
        app, [*args, "--price-per-image", "0.05", "--since", "2021-01-01"], env={"COLUMNS": "200"}
    )
    assert recent.exit_code == 0, recent.output
    out = recent.output
    assert "$0.15 for 3 image(s); 2 task(s) succeeded ($0.0750 each)" in out
    assert "1 image(s) made for outcomes refused as late" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") == 7}
    assert [c.strip() for c in rows["a"].split("│")[2:7]] == ["4", "3", "0", "no outcome yet: 1", "3"]
    assert [c.strip() for c in rows["b"].split("│")[2:7]] == [
        "4",
        "0",
        "1",
        "200 without an image: 1, 503: 1, no answer: 1",
        "0",
    ]


def test_bad_input_is_a_clear_error_without_a_traceback(store_url: str) -> None:
    """A negative price, an unreadable date and an unreachable store each exit with a message."""
    negative = runner.invoke(app, ["cost", "--redis-url", store_url, "--price-per-image", "-1"])
    assert negative.exit_code == 2 and "must be >= 0" in negative.output
    date = runner.invoke(app, ["cost", "--redis-url", store_url, "--since", "yesterday"])
    assert date.exit_code == 2 and "Traceback" not in date.output
    gone = runner.invoke(app, ["cost", "--redis-url", "redis://127.0.0.1:1/0"])
    assert gone.exit_code == 1 and "cannot read the event store" in gone.output
    assert gone.exception is None or isinstance(gone.exception, SystemExit)
