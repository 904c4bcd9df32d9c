"""`genqueue top`, `plan`, `audit`, `replay` and `events …`: watch an instance, plan its capacity,
and read its event log."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from genqueue_client import Client, ConnectionFailed, GenqueueError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from actors.config import STANDARD_PRICE_PER_IMAGE, KeyPoolConfig
from actors.logs import configure
from events.catalogue import KINDS
from serve_app.cli.options import ConfigFile, DataDir, Namespace, RedisUrl, config_or_exit, fail, program
from serve_app.cli.store import store

if TYPE_CHECKING:
    from events.archive import Archive
    from serve_app.cli.top import Frame

events_app = typer.Typer(help="The event stream.", no_args_is_help=True, rich_markup_mode=None)
console = Console(highlight=False)


def top(
    url: Annotated[str, typer.Argument(help="The instance's base URL.")] = "http://127.0.0.1:8000",
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    once: Annotated[bool, typer.Option(help="Print one frame and exit.")] = False,
    token: Annotated[
        str | None, typer.Option(envvar="GENQUEUE_TOKEN", help="An admin token (the ops endpoints need one).")
    ] = None,
) -> None:
    """A live dashboard of a running instance: queue, throughput, waits, pools, alerts."""
    from rich.live import Live

    from serve_app.cli.top import render

    with Client(url, token, timeout=10, retries=0) as client:
        frame = _fetch_or_exit(client, url, token)
        if once:
            console.print(render(frame, None))
            return
        with (
            contextlib.suppress(KeyboardInterrupt),
            Live(render(frame, None), console=console, refresh_per_second=4) as live,
        ):
            while True:
                time.sleep(interval)
                previous, frame = frame, _fetch_or_exit(client, url, token)
                live.update(render(frame, previous))


def _fetch_or_exit(client: Client, url: str, token: str | None) -> Frame:
    """One frame, or exit 1 with what is wrong in one line: no admin token, or no instance."""
    from serve_app.cli.top import fetch

    try:
        return fetch(client)
    except ConnectionFailed as exc:
        fail(f"cannot reach genqueue at {url}: {exc}")
    except GenqueueError as exc:
        status = exc.status
        if status in (401, 403):
            make = f"{program('genqueue')} token create --user ops --role admin"
            why = "no token was given" if not token and status == 401 else f"the token was refused ({status})"
            fail(
                f"genqueue top needs an admin token and {why}: pass --token or set GENQUEUE_TOKEN "
                f"(make one with `{make}` and the --config or --data-dir of the instance)"
            )
        fail(f"genqueue at {url} answered {status}; is it a genqueue instance?")
    except (ValueError, KeyError) as exc:
        fail(f"genqueue at {url} answered something else than genqueue: {type(exc).__name__}: {exc}")


def plan(
    users: Annotated[int, typer.Option(help="Users who press generate.")],
    latency: Annotated[float, typer.Option(help="Seconds per upstream call.")],
    pools: Annotated[
        str | None, typer.Option(help="Projects: COUNTxRPM (3x15) or NAME:RPM,... (a:15,b:360).")
    ] = None,
    slots: Annotated[
        int | None, typer.Option(help="Tasks running at once (with --config: its [queue] slots).")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Plan on this TOML config's pools and [[routes]] instead of --pools: each "
            "route serves until its pools' day limits are used, then the next.",
        ),
    ] = None,
    kind: Annotated[str, typer.Option(help="With --config: the tasks' kind (its chain of routes).")] = KINDS[
        0
    ],
    max_price: Annotated[
        int | None, typer.Option(help="With --config: the tasks' max_price (dearer routes they may use).")
    ] = None,
    arrival: Annotated[str, typer.Option(help="burst (all at once) or ramp:SECONDS.")] = "burst",
    target_wait: Annotated[
        float | None, typer.Option(help="Also find the fewest projects, then slots, for this longest wait.")
    ] = None,
    price_per_image: Annotated[
        float, typer.Option(help="Upstream price of one image, USD.")
    ] = STANDARD_PRICE_PER_IMAGE,
    bursts_per_day: Annotated[
        float, typer.Option(help="Bursts like this one per day, for the monthly cost.")
    ] = 1.0,
    window: Annotated[float, typer.Option(help="The quota window, seconds.")] = 60.0,
    margin: Annotated[
        float, typer.Option(help="The key pool's margin per window, seconds.")
    ] = KeyPoolConfig().margin_seconds,
) -> None:
    """Predict when each user starts and finishes under the given pools and slots, and what it costs."""
    from actors.planner import arrivals, cheapest, parse_pools, simulate
    from serve_app.cli.planning import band_table, cost_line, plan_routes, waits_line

    if (pools is None) == (config_file is None):
        fail("give the pools: --pools COUNTxRPM or NAME:RPM,..., or --config with a configuration", 2)
    if config_file is not None:
        if target_wait is not None:
            fail("--target-wait plans projects like --pools gives them; leave out --config", 2)
        config = config_or_exit(config_file)
        args = (users, arrival, slots, latency, window, margin, kind, max_price, bursts_per_day)
        plan_routes(console, config, *args)
        return
    assert pools is not None
    if slots is None:
        fail("--slots is needed with --pools", 2)
    try:
        projects = parse_pools(pools)
        times = arrivals(users, arrival)
        schedule = simulate(times, slots, latency, projects, window, margin)
    except ValueError as exc:
        fail(str(exc), 2)
    title = f"{users} users, {len(projects)} projects, {slots} slots, {latency:g} s per call"
    console.print(band_table(schedule, title, latency, window))
    console.print(waits_line(schedule))
    console.print(cost_line(users * price_per_image, f"at ${price_per_image:g} an image", bursts_per_day))
    if target_wait is not None:
        rpm = min(p.rpm for p in projects)
        found = cheapest(times, latency, rpm, target_wait, window, margin)
        if found is None:
            console.print(
                f"no configuration of up to 50 projects at {rpm} RPM keeps every wait "
                f"within {target_wait:g} s"
            )
        else:
            count, need = found
            console.print(
                f"cheapest for a longest wait of {target_wait:g} s: "
                f"{count} project(s) at {rpm} RPM, {need} slots"
            )


def audit(
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
    slots: Annotated[int | None, typer.Option(help="Check that running never exceeded this.")] = None,
) -> None:
    """Replay the whole event log (the archive's segments, then the stream) and check every
    invariant and the archive's hash chain; exit 1 on a violation."""
    from serve_app.cli.ops import run_audit

    configure("WARNING")
    archive = archive_for(config_file, data_dir)
    with store(config_file, data_dir, redis_url, namespace) as where, archive_errors():
        started = time.perf_counter()
        result = asyncio.run(run_audit(where.url, where.namespace, slots, archive))
        seconds = time.perf_counter() - started
    r = result.report
    table = Table(title=f"audit of namespace {where.namespace}", show_header=False)
    table.add_row(
        "events", f"{result.events:,} in {seconds:.2f} s ({result.events / max(seconds, 1e-9):,.0f}/s)"
    )
    table.add_row("tasks submitted", f"{r.submitted:,}")
    table.add_row("ended", ", ".join(f"{k} {v:,}" for k, v in sorted(r.ended.items())) or "none")
    table.add_row("still waiting or running", f"{r.still_live:,}")
    table.add_row("most running at once", str(r.max_running))
    for pool, calls in sorted(r.max_window_calls.items()):
        table.add_row(f"pool {pool}", f"at most {calls} calls in a window (limit {r.window_capacity[pool]})")
    c = r.credits
    table.add_row(
        "credits",
        f"granted {c['granted']:,}, charged {c['charged']:,}, "
        f"refunded {c['refunded']:,} in {r.refunds:,} refund(s) ({r.route_refunded:,} of it for routes)",
    )
    for name, route in r.routes.items():
        table.add_row(
            f"route {name}",
            f"{route['tasks']:,} succeeded, net {route['net_credits']:,} credits "
            f"({route['route_refunds']:,} refunded for the route)",
        )
    if r.webhooks:
        table.add_row("webhooks", ", ".join(f"{k} {v:,}" for k, v in sorted(r.webhooks.items())))
    console.print(table)
    if result.violations:
        for v in result.violations:
            console.print(f"violation: {v}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]every invariant holds[/green]")


def archive_for(config_file: Path | None, data_dir: Path | None) -> Archive:
    """The archive of the instance these options name: `[archive] url`, else the data
    directory's `archive` (the --data-dir given, or the config's)."""
    from actors.archiving import archive_of, archive_url

    config = config_or_exit(config_file)
    if data_dir is not None:
        config = replace(config, server=replace(config.server, data_dir=str(data_dir.expanduser())))
    try:
        return archive_of(config)
    except (ImportError, ValueError, OSError) as exc:  # an fsspec URL whose filesystem is missing
        fail(f"cannot open the archive at {archive_url(config)}: {exc}")


@contextlib.contextmanager
def archive_errors() -> Iterator[None]:
    """An archive that cannot be read ends the command with one line on stderr (exit 1)."""
    from events.archive import ArchiveError

    try:
        yield
    except ArchiveError as exc:
        fail(f"cannot read the archive: {exc}")


def replay(
    task: Annotated[str | None, typer.Option(help="Print this task's history.")] = None,
    at: Annotated[
        dt.datetime | None, typer.Option(help="Print the queue as it stood at this moment.")
    ] = None,
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
) -> None:
    """One task's timeline (--task ID), or the queue's state at a moment (--at TIMESTAMP)."""
    from serve_app.cli.ops import state_at, task_timeline

    configure("WARNING")
    if (task is None) == (at is None):
        fail("give exactly one of --task or --at", 2)
    archive = archive_for(config_file, data_dir)
    with store(config_file, data_dir, redis_url, namespace) as where, archive_errors():
        if task is not None:
            events = asyncio.run(task_timeline(where.url, where.namespace, task, archive))
            if not events:
                fail(f"no task {task}")
            t0 = float(events[0]["data"]["at"])
            table = Table(title=f"task {task}")
            for col in ("+seconds", "event", "details"):
                table.add_column(col)
            for e in events:
                data = dict(e["data"])
                offset = float(data.pop("at")) - t0
                data.pop("task_id", None)
                details = ", ".join(
                    f"{k}={v}" for k, v in data.items() if k not in ("inputs", "prompt", "digest")
                )
                table.add_row(f"{offset:8.3f}", e["type"], Text(details))
            console.print(table)
            return
        assert at is not None
        moment = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        state = asyncio.run(state_at(where.url, where.namespace, moment, archive))
    table = Table(title=f"queue at {moment.isoformat()} (after event {state.last_id})", show_header=False)
    table.add_row("waiting", str(state.waiting))
    table.add_row(
        "running", ", ".join(f"{t} (attempt {lease.attempt})" for t, lease in state.running.items()) or "none"
    )
    table.add_row("next up", ", ".join(list(state.waiting_order())[:5]) or "none")
    table.add_row(
        "ended so far", f"succeeded {state.succeeded}, failed {state.failed}, cancelled {state.cancelled}"
    )
    console.print(table)


@events_app.command("export")
def events_export(
    out: Annotated[Path, typer.Option(help="JSON-lines file to write.")],
    since: Annotated[dt.datetime | None, typer.Option(help="Only events at or after this moment.")] = None,
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
) -> None:
    """Write the log (the archive's segments, then the stream) as JSON lines ({id, type, v,
    task, data})."""
    from serve_app.cli.ops import export

    configure("WARNING")
    moment = since if since is None or since.tzinfo else since.replace(tzinfo=dt.UTC)
    archive = archive_for(config_file, data_dir)
    with (
        store(config_file, data_dir, redis_url, namespace) as where,
        archive_errors(),
        out.open("w") as fh,
    ):
        written = asyncio.run(export(where.url, where.namespace, fh, moment, archive))
    console.print(f"wrote {written:,} events to {out}", markup=False)
