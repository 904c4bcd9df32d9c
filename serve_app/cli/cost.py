"""`genqueue cost`: what the upstream calls cost, counted from the event log alone.

A call is an attempt that held a pool's token and reached the provider: its outcome is a
`task.succeeded` (200 with an image), a `task.attempt_failed` naming a pool (its HTTP code;
0 when no answer came: a timeout or a broken connection) or a `task.upstream_throttled`
naming a pool (429, or a rejected key). An outcome refused as late
(`task.late_outcome_ignored`) still made its call; a late success made an image nobody
received. A started attempt with no outcome yet is in flight, or was lost with its worker.

Images are priced at their pool's `price_per_image` from the configuration (a pool the
configuration no longer names: the standard list price), or all at `--price-per-image`.
Calls and images are also counted per pool per Pacific day (the day a pool's `rpd` and its
`max_spend_per_day` count in), dated by the attempt's start, beside the pool's spend cap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from actors.config import STANDARD_PRICE_PER_IMAGE, PoolConfig
from actors.config.pools import spend_cap_calls, usd
from events.catalogue import (
    Event,
    TaskAttemptFailed,
    TaskLateOutcomeIgnored,
    TaskStarted,
    TaskSucceeded,
    TaskUpstreamThrottled,
)
from events.codec import decode
from events.days import pacific_day
from events.errors import EventDecodeError
from events.redis_store import RedisEventStore
from serve_app.cli.options import ConfigFile, DataDir, Namespace, RedisUrl, config_or_exit, fail

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
class DayCalls:
    """One pool's calls and images on one Pacific day."""

    calls: int = 0
    images: int = 0


@dataclass(slots=True)
class CostLedger:
    """Folds events into calls per pool (and per Pacific day), images made and tasks that succeeded."""

    pools: dict[str, PoolCalls] = field(default_factory=dict)
    days: dict[tuple[str, str], DayCalls] = field(default_factory=dict)  # (Pacific day, pool)
    succeeded_tasks: int = 0
    discarded_images: int = 0
    events: int = 0
    undecodable: int = 0
    _started: dict[tuple[str, int], tuple[str, float]] = field(default_factory=dict)

    def _count(self, name: str, at: float, outcome: str, image: bool = False) -> None:
        """One call of pool `name` started at `at`, with its outcome ("" for none yet)."""
        pool = self.pools.setdefault(name or UNKNOWN_POOL, PoolCalls())
        day = self.days.setdefault((pacific_day(at), name or UNKNOWN_POOL), DayCalls())
        if outcome:
            pool.outcomes[outcome] += 1
        else:
            pool.no_outcome += 1
        day.calls += 1
        pool.images += image
        day.images += image

    def _ended(self, task_id: str, attempt: int, pool: str, at: float) -> tuple[str, float]:
        """The pool of an attempt that now has its outcome (the event's own, else its start's)
        and when its call started (else the outcome's `at`)."""
        started, since = self._started.pop((task_id, attempt), ("", at))
        return pool or started, since

    def feed(self, event: Event) -> None:
        """Count one event."""
        self.events += 1
        match event:
            case TaskStarted(task_id=task_id, attempt=attempt, pool=pool, at=at) if pool:
                self._started[(task_id, attempt)] = (pool, at)
            case TaskSucceeded(task_id=task_id, attempt=attempt, pool=pool, at=at):
                self._count(*self._ended(task_id, attempt, pool, at), "200", image=True)
                self.succeeded_tasks += 1
            case TaskAttemptFailed(task_id=task_id, attempt=attempt, pool=pool, code=code, at=at):
                # No pool: the attempt failed before any call (an unreadable input).
                pool, since = self._ended(task_id, attempt, pool, at)
                if pool:
                    outcome = EMPTY_ANSWER if code == 200 else str(code) if code else NO_ANSWER
                    self._count(pool, since, outcome)
            case TaskUpstreamThrottled(task_id=task_id, attempt=attempt, pool=pool, code=code, at=at):
                # No pool: no pool could grant a token, so no call was made.
                pool, since = self._ended(task_id, attempt, pool, at)
                if pool:
                    self._count(pool, since, str(code) if code else NO_ANSWER)
            case TaskLateOutcomeIgnored(task_id=task_id, attempt=attempt, outcome=outcome):
                pool, since = self._started.pop((task_id, attempt), ("", 0.0))
                if pool and outcome == TaskSucceeded.type:
                    self._count(pool, since, "200", image=True)
                    self.discarded_images += 1
                elif pool:
                    self._count(pool, since, f"late {outcome.removeprefix('task.')}")
            case _:
                pass

    def finish(self) -> CostLedger:
        """Count the attempts still without an outcome; returns self."""
        for pool, since in self._started.values():
            self._count(pool, since, "")
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


@dataclass(frozen=True, slots=True)
class Pricing:
    """What one image of each pool costs, USD, and each pool's daily spend cap (0: none):
    the configured pools' own, or every pool at `flat` when one is given."""

    prices: Mapping[str, float] = field(default_factory=dict)
    caps: Mapping[str, float] = field(default_factory=dict)
    flat: float | None = None

    @classmethod
    def of(cls, pools: Sequence[PoolConfig], flat: float | None = None) -> Pricing:
        """The configured pools' prices and caps; with `flat`, every image at that price."""
        prices = {p.name: p.price_per_image for p in pools}
        return cls(prices, {p.name: p.max_spend_per_day for p in pools}, flat)

    def price(self, pool: str) -> float:
        """One image of `pool`, USD (the standard list price for a pool not configured)."""
        return self.flat if self.flat is not None else self.prices.get(pool, STANDARD_PRICE_PER_IMAGE)

    def cap_calls(self, pool: str) -> int:
        """The calls a day `pool`'s spend cap pays for at its configured price, as the key
        pool counts them (0: no cap)."""
        price = self.prices.get(pool, STANDARD_PRICE_PER_IMAGE)
        return spend_cap_calls(self.caps.get(pool, 0.0), price)

    def cost(self, ledger: CostLedger) -> float:
        """What every image in `ledger` cost, each at its pool's price."""
        return sum(p.images * self.price(name) for name, p in ledger.pools.items())

    @property
    def title(self) -> str:
        """How images are priced, for a table's title."""
        return f"${self.flat:g} an image" if self.flat is not None else "each pool's price"


def render(ledger: CostLedger, pricing: Pricing, since: dt.datetime | None) -> Table:
    """Calls per pool by outcome, and the images they made."""
    when = f"since {since.isoformat()}" if since else "whole log"
    table = Table(title=f"upstream calls and cost ({when}, {pricing.title})")
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


def render_days(ledger: CostLedger, pricing: Pricing) -> Table:
    """Each pool's calls, images and spend per Pacific day, beside its daily spend cap: the cap
    counts calls at the pool's configured price, and is marked reached once a day's calls
    were all it pays for."""
    table = Table(title="spend per pool per Pacific day (the day rpd and max_spend_per_day count in)")
    for column in ("day", "pool", "calls", "images", "price", "spend", "spend cap"):
        table.add_column(column, justify="left" if column in ("day", "pool", "spend cap") else "right")
    for (day, name), counted in sorted(ledger.days.items()):
        price, cap = pricing.price(name), pricing.caps.get(name, 0.0)
        capped = 0 < pricing.cap_calls(name) <= counted.calls
        limit = f"${usd(cap)}{' (reached)' if capped else ''}" if cap else "-"
        spend = f"${usd(counted.images * price)}"
        table.add_row(day, name, f"{counted.calls:,}", f"{counted.images:,}", f"${price:g}", spend, limit)
    return table


def summary(ledger: CostLedger, pricing: Pricing) -> str:
    """The cost in one line: images, their price, and the price of each task that succeeded."""
    cost = pricing.cost(ledger)
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
    price_per_image: Annotated[
        float | None,
        typer.Option(help="Price every image at this, USD (default: each pool's price_per_image)."),
    ] = None,
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
    if price_per_image is not None and not price_per_image >= 0:
        fail(f"--price-per-image must be >= 0, got {price_per_image:g}", 2)
    pricing = Pricing.of(config_or_exit(config_file).pools, price_per_image)
    with store(config_file, data_dir, redis_url, namespace) as where:
        ledger = asyncio.run(read_ledger(where.url, where.namespace, since))
    console.print(render(ledger, pricing, since))
    if ledger.days:
        console.print(render_days(ledger, pricing))
    console.print(summary(ledger, pricing), soft_wrap=True)
    if ledger.undecodable:
        console.print(
            f"{ledger.undecodable:,} event(s) could not be decoded and were skipped", style="yellow"
        )
