"""`genqueue top`, `plan`, `audit`, `replay` and `events …`: watch an instance, plan its capacity,
and read its event log."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from actors.config import KeyPoolConfig
from actors.logs import configure
from serve_app.cli.options import ConfigFile, DataDir, Namespace, RedisUrl, fail, program
from serve_app.cli.store import store

if TYPE_CHECKING:
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

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
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


def _fetch_or_exit(client: httpx.Client, url: str, token: str | None) -> Frame:
    """One frame, or exit 1 with what is wrong in one line: no admin token, or no instance."""
    from serve_app.cli.top import fetch

    try:
        return fetch(client)
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status in (401, 403):
            make = f"{program('genqueue')} token create --user ops --role admin"
            why = "no token was given" if not token and status == 401 else f"the token was refused ({status})"
            fail(
                f"genqueue top needs an admin token and {why}: pass --token or set GENQUEUE_TOKEN "
                f"(make one with `{make}` and the --config or --data-dir of the instance)"
            )
        fail(f"genqueue at {url} answered {status} to {exc.request.url.path}; is it a genqueue instance?")
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        fail(f"cannot reach genqueue at {url}: {type(exc).__name__}: {exc}")


def plan(
    users: Annotated[int, typer.Option(help="Users who press generate.")],
    pools: Annotated[str, typer.Option(help="Projects: COUNTxRPM (3x15) or NAME:RPM,... (a:15,b:360).")],
    slots: Annotated[int, typer.Option(help="Tasks running at once.")],
    latency: Annotated[float, typer.Option(help="Seconds per upstream call.")],
    arrival: Annotated[str, typer.Option(help="burst (all at once) or ramp:SECONDS.")] = "burst",
    target_wait: Annotated[
        float | None, typer.Option(help="Also find the fewest projects, then slots, for this longest wait.")
    ] = None,
    price_per_image: Annotated[float, typer.Option(help="Upstream price of one image, USD.")] = 0.067,
    bursts_per_day: Annotated[
        float, typer.Option(help="Bursts like this one per day, for the monthly cost.")
    ] = 1.0,
    window: Annotated[float, typer.Option(help="The quota window, seconds.")] = 60.0,
    margin: Annotated[
        float, typer.Option(help="The key pool's margin per window, seconds.")
    ] = KeyPoolConfig().margin_seconds,
) -> None:
    """Predict when each user starts and finishes under the given pools and slots, and what it costs."""
    from actors.planner import arrivals, bands, cheapest, parse_pools, simulate
    from serve_app.cli.burst import percentile

    try:
        projects = parse_pools(pools)
        times = arrivals(users, arrival)
        schedule = simulate(times, slots, latency, projects, window, margin)
    except ValueError as exc:
        fail(str(exc), 2)
    table = Table(title=f"{users} users, {len(projects)} projects, {slots} slots, {latency:g} s per call")
    for column in ("users", "start", "finished by"):
        table.add_column(column)
    for first, last, lo, hi in bands(schedule, window):
        who = f"{first}" if first == last else f"{first}-{last}"
        if hi < 0.5:
            when = "at once"
        elif hi - lo < 0.05:
            when = f"at {lo:.1f} s"
        else:
            when = f"{lo:.1f} to {hi:.1f} s"
        table.add_row(who, when, f"{hi + latency:.1f} s")
    console.print(table)
    waits = schedule.waits
    cost = users * price_per_image
    console.print(
        f"makespan {schedule.makespan:.1f} s; wait p50 {percentile(waits, 50):.1f} s, "
        f"p90 {percentile(waits, 90):.1f} s, longest {max(waits):.1f} s"
    )
    console.print(
        f"cost ${cost:,.2f} per burst at ${price_per_image:g} an image; "
        f"${cost * bursts_per_day * 30:,.2f} a month at {bursts_per_day:g} burst(s) a day"
    )
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
    """Replay the whole event stream and check every invariant; exit 1 on a violation."""
    from serve_app.cli.ops import run_audit

    configure("WARNING")
    with store(config_file, data_dir, redis_url, namespace) as where:
        started = time.perf_counter()
        result = asyncio.run(run_audit(where.url, where.namespace, slots))
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
        f"refunded {c['refunded']:,} in {r.refunds:,} refund(s)",
    )
    if r.webhooks:
        table.add_row("webhooks", ", ".join(f"{k} {v:,}" for k, v in sorted(r.webhooks.items())))
    console.print(table)
    if result.violations:
        for v in result.violations:
            console.print(f"violation: {v}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]every invariant holds[/green]")


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
    with store(config_file, data_dir, redis_url, namespace) as where:
        if task is not None:
            events = asyncio.run(task_timeline(where.url, where.namespace, task))
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
        state = asyncio.run(state_at(where.url, where.namespace, moment))
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
    """Write the stream as JSON lines ({id, type, v, task, data}) for archiving."""
    from serve_app.cli.ops import export

    configure("WARNING")
    moment = since if since is None or since.tzinfo else since.replace(tzinfo=dt.UTC)
    with store(config_file, data_dir, redis_url, namespace) as where, out.open("w") as fh:
        written = asyncio.run(export(where.url, where.namespace, fh, moment))
    console.print(f"wrote {written:,} events to {out}", markup=False)
