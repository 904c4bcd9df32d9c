"""`genqueue cost` prices each pool's images at the pool's configured `price_per_image` (or
all at `--price-per-image`), and shows each pool's calls, images and spend per Pacific day
beside its daily spend cap; over a real store."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

from typer.testing import CliRunner

from events.catalogue import Event, TaskStarted, TaskSucceeded, TaskUpstreamThrottled
from events.days import PACIFIC
from events.redis_store import RedisEventStore
from serve_app.cli.main import app
from tests.helpers import submitted

runner = CliRunner()
# 23:30 Pacific on 29 November 2026: a call started then whose image came after midnight
# counts on the 29th, the day the key pool counted its grant in.
LATE = dt.datetime(2026, 11, 29, 23, 30, tzinfo=PACIFIC).timestamp()
DAY = 86_400.0

CONFIG = """
[[pools]]
name = "a"
rpm = 60
keys = ["key-a-0123456789abcdef"]
price_per_image = 0.05
max_spend_per_day = 0.15

[[pools]]
name = "b"
rpm = 60
keys = ["key-b-0123456789abcdef"]
service_tier = "flex"
"""


def call(pool: str, started: float, ended: float, ok: bool = True) -> list[Event]:
    """One task's call on `pool`: its start, then an image or a 429."""
    task = uuid.uuid4().hex
    outcome: Event = (
        TaskSucceeded(
            task_id=task, attempt=1, result="r", mime_type="image/png", elapsed=1.0, pool=pool, at=ended
        )
        if ok
        else TaskUpstreamThrottled(
            task_id=task,
            attempt=1,
            pool=pool,
            key_id=f"{pool}#1",
            code=429,
            quota="minute",
            retry_after=0.0,
            order=started,
            reason="r",
            at=ended,
        )
    )
    return [
        submitted(task, at=started),
        TaskStarted(task_id=task, attempt=1, pool=pool, key_id=f"{pool}#1", at=started),
        outcome,
    ]


def history() -> list[Event]:
    """29 Nov: a 3 images (its cap's 3 calls, the last ending after midnight), b 2 images and
    a 429, a pool no longer configured 1 image; 30 Nov: a 1 image."""
    return [
        *call("a", LATE - 7200, LATE - 7199),
        *call("a", LATE - 3600, LATE - 3599),
        *call("a", LATE, LATE + 3600),  # started 23:30, ended 00:30 Pacific
        *call("b", LATE - 60, LATE - 59),
        *call("b", LATE - 50, LATE - 49),
        *call("b", LATE - 40, LATE - 39, ok=False),
        *call("gone", LATE - 30, LATE - 29),
        *call("a", LATE + DAY, LATE + DAY + 1),
    ]


def rows(output: str, bars: int) -> list[list[str]]:
    """The cells of the table rows with `bars` column separators."""
    return [
        [c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines() if line.count("│") == bars
    ]


def test_each_pool_is_priced_at_its_own_price_and_spend_is_shown_per_day(
    store_url: str, tmp_path: Path
) -> None:
    """a at $0.05 (4 images: $0.20), b at the flex list price $0.0335 (2: $0.067), a pool the
    config no longer names at the standard $0.067 (1): $0.334 for 7 images; per Pacific day, a's
    3 calls on the 29th reach its $0.15 cap. --price-per-image prices every pool at it, while
    the cap is still counted at the pool's own price."""
    namespace = f"cost{uuid.uuid4().hex[:8]}"
    config = tmp_path / "genqueue.toml"
    config.write_text(CONFIG)

    async def append() -> None:
        store = RedisEventStore.from_url(store_url, namespace)
        try:
            await store.append(history())
        finally:
            await store.close()

    asyncio.run(append())
    args = ["cost", "--config", str(config), "--redis-url", store_url, "--namespace", namespace]
    own = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert own.exit_code == 0, own.output
    assert "(whole log, each pool's price)" in " ".join(own.output.split())
    assert "cost $0.33 for 7 image(s); 7 task(s) succeeded ($0.0477 each)" in own.output
    assert rows(own.output, 8) == [
        ["2026-11-29", "a", "3", "3", "$0.05", "$0.15", "$0.15 (reached)"],
        ["2026-11-29", "b", "3", "2", "$0.0335", "$0.067", "-"],
        ["2026-11-29", "gone", "1", "1", "$0.067", "$0.067", "-"],
        ["2026-11-30", "a", "1", "1", "$0.05", "$0.05", "$0.15"],
    ]
    flat = runner.invoke(app, [*args, "--price-per-image", "0.1"], env={"COLUMNS": "200"})
    assert flat.exit_code == 0, flat.output
    assert (
        "(whole log, $0.1 an image)" in " ".join(flat.output.split())
        and "cost $0.70 for 7 image(s)" in flat.output
    )
    assert [r[4:] for r in rows(flat.output, 8)] == [
        ["$0.1", "$0.30", "$0.15 (reached)"],
        ["$0.1", "$0.20", "-"],
        ["$0.1", "$0.10", "-"],
        ["$0.1", "$0.10", "$0.15"],
    ]
