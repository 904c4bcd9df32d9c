"""`genqueue cost`: what the upstream calls cost, counted from the event log alone.

A call is an attempt that held a pool's token and reached the provider: its outcome is a
`task.succeeded` (200 with an image), a `task.attempt_failed` naming a pool (its HTTP code;
0 when no answer came: a timeout or a broken connection) or a `task.upstream_throttled`
naming a pool (429, or a rejected key). An outcome refused as late
(`task.late_outcome_ignored`) still made its call; a late success made an image nobody
received. A started attempt with no outcome yet is in flight, or was lost with its worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from events.catalogue import (
    Event,
    TaskAttemptFailed,
    TaskLateOutcomeIgnored,
    TaskStarted,
    TaskSucceeded,
    TaskUpstreamThrottled,
)
from events.codec import decode
from events.errors import EventDecodeError
from events.redis_store import RedisEventStore
from serve_app.cli.options import ConfigFile, DataDir, Namespace, RedisUrl, fail

NO_ANSWER = "no answer"
EMPTY_ANSWER = "200 without an image"
UNKNOWN_POOL = "(unknown pool)"


@dataclass(slots=True)
class PoolCalls:
    """One pool's calls by outcome: an HTTP code ("200", "429", "503", ...) or "no answer"."""

    outcomes: Counter[str] = field(default_factory=Counter)
    images: int = 0
    no_outcome: int = 0  # started, no outcome recorded (in flight, or lost with a worker)

    @property
    def calls(self) -> int:
        """Every call the pool's tokens paid for."""
        return sum(self.outcomes.values()) + self.no_outcome


@dataclass(slots=True)
class CostLedger:
    """Folds events into calls per pool, images made and tasks that succeeded."""

    pools: dict[str, PoolCalls] = field(default_factory=dict)
    succeeded_tasks: int = 0
    discarded_images: int = 0
    events: int = 0
    undecodable: int = 0
    _started: dict[tuple[str, int], str] = field(default_factory=dict)

    def _pool(self, name: str) -> PoolCalls:
        return self.pools.setdefault(name or UNKNOWN_POOL, PoolCalls())

    def _ended(self, task_id: str, attempt: int, pool: str) -> str:
        """The pool of an attempt that now has its outcome: the event's own, else its start's."""
        started = self._started.pop((task_id, attempt), "")
        return pool or started

    def feed(self, event: Event) -> None:
        """Count one event."""
        self.events += 1
        match event:
            case TaskStarted(task_id=task_id, attempt=attempt, pool=pool) if pool:
                self._started[(task_id, attempt)] = pool
            case TaskSucceeded(task_id=task_id, attempt=attempt, pool=pool):
                calls = self._pool(self._ended(task_id, attempt, pool))
                calls.outcomes["200"] += 1
                calls.images += 1
                self.succeeded_tasks += 1
            case TaskAttemptFailed(task_id=task_id, attempt=attempt, pool=pool, code=code):
                # No pool: the attempt failed before any call (an unreadable input).
                if pool := self._ended(task_id, attempt, pool):
                    outcome = EMPTY_ANSWER if code == 200 else str(code) if code else NO_ANSWER
                    self._pool(pool).outcomes[outcome] += 1
            case TaskUpstreamThrottled(task_id=task_id, attempt=attempt, pool=pool, code=code):
                # No pool: no pool could grant a token, so no call was made.
                if pool := self._ended(task_id, attempt, pool):
                    self._pool(pool).outcomes[str(code) if code else NO_ANSWER] += 1
            case TaskLateOutcomeIgnored(task_id=task_id, attempt=attempt, outcome=outcome):
                pool = self._started.pop((task_id, attempt), "")
                if pool and outcome == TaskSucceeded.type:
                    calls = self._pool(pool)
                    calls.outcomes["200"] += 1
                    calls.images += 1
                    self.discarded_images += 1
                elif pool:
                    self._pool(pool).outcomes[f"late {outcome.removeprefix('task.')}"] += 1
            case _:
                pass

    def finish(self) -> CostLedger:
        """Count the attempts still without an outcome; returns self."""
        for pool in self._started.values():
            self._pool(pool).no_outcome += 1
        self._started.clear()
        return self

    @property
    def images(self) -> int:
        """Images upstream made (and billed), delivered or not."""
        return sum(p.images for p in self.pools.values())

    @property
    def calls(self) -> int:
        """Every upstream call."""
        return sum(p.calls for p in self.pools.values())


def stream_start(since: dt.datetime | None) -> str:
    """The stream id to read after: event ids are milliseconds since the epoch."""
    if since is None:
        return "0-0"
    moment = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
    return f"{int(moment.timestamp() * 1000) - 1}-{2**63 - 1}"


async def read_ledger(url: str, namespace: str, since: dt.datetime | None = None) -> CostLedger:
    """Fold the stream (from `since`) into a ledger."""
    store = RedisEventStore.from_url(url, namespace)
    ledger = CostLedger()
    after = stream_start(since)
    try:
        while page := await store.read_raw(after, 10_000):
            for _, fields in page:
                try:
                    ledger.feed(decode(fields))
                except EventDecodeError:
                    ledger.undecodable += 1
            after = page[-1][0]
    finally:
        await store.close()
    return ledger.finish()


def render(ledger: CostLedger, price: float, since: dt.datetime | None) -> Table:
    """Calls per pool by outcome, and the images they made."""
    when = f"since {since.isoformat()}" if since else "whole log"
    table = Table(title=f"upstream calls and cost ({when}, ${price:g} an image)")
    for column in ("pool", "calls", "200", "429", "other", "images"):
        table.add_column(column, justify="left" if column in ("pool", "other") else "right")
    for name, p in sorted(ledger.pools.items()):
        other = Counter({k: v for k, v in p.outcomes.items() if k not in ("200", "429")})
        if p.no_outcome:
            other["no outcome yet"] = p.no_outcome
        table.add_row(
            name,
            f"{p.calls:,}",
            f"{p.outcomes['200']:,}",
            f"{p.outcomes['429']:,}",
            ", ".join(f"{k}: {v:,}" for k, v in sorted(other.items())) or "-",
            f"{p.images:,}",
        )
    total: Counter[str] = sum((p.outcomes for p in ledger.pools.values()), Counter())
    table.add_section()
    table.add_row(
        "all", f"{ledger.calls:,}", f"{total['200']:,}", f"{total['429']:,}", "", f"{ledger.images:,}"
    )
    return table


def summary(ledger: CostLedger, price: float) -> str:
    """The cost in one line: images, their price, and the price of each task that succeeded."""
    cost = ledger.images * price
    line = f"cost ${cost:,.2f} for {ledger.images:,} image(s); {ledger.succeeded_tasks:,} task(s) succeeded"
    if ledger.succeeded_tasks:
        line += f" (${cost / ledger.succeeded_tasks:,.4f} each)"
    if ledger.discarded_images:
        line += f"; {ledger.discarded_images:,} image(s) made for outcomes refused as late"
    return line


def command(
    since: Annotated[
        dt.datetime | None, typer.Option(help="Count events at or after this moment (UTC unless given).")
    ] = None,
    price_per_image: Annotated[float, typer.Option(help="Upstream price of one image, USD.")] = 0.067,
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
) -> None:
    """Upstream calls per pool and their outcomes, images made and what they cost, from the event log."""
    from actors.logs import configure
    from serve_app.cli.store import store

    configure("WARNING")
    console = Console(highlight=False)
    if price_per_image < 0:
        fail(f"--price-per-image must be >= 0, got {price_per_image:g}", 2)
    with store(config_file, data_dir, redis_url, namespace) as where:
        ledger = asyncio.run(read_ledger(where.url, where.namespace, since))
    console.print(render(ledger, price_per_image, since))
    console.print(summary(ledger, price_per_image), soft_wrap=True)
    if ledger.undecodable:
        console.print(
            f"{ledger.undecodable:,} event(s) could not be decoded and were skipped", style="yellow"
        )
