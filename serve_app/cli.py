"""The `genqueue` command: run an instance, or run the 60-user demo on the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from actors.config import Config, KeyPoolConfig, PoolConfig, Secret, redact_url
from actors.logs import configure
from serve_app.access_cli import credits_app, token_app
from serve_app.cli_options import DataDir, Namespace, RedisUrl, config_or_exit
from serve_app.cost import command as cost_command
from serve_app.loadtest import command as loadtest_command

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="genqueue: a burst-proof queue for AI images."
)
console = Console()


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


@app.command()
def up(
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where data and blobs live.")] = None,
    address: Annotated[str | None, typer.Option(help="Join this Ray cluster (ray://… or auto).")] = None,
) -> None:
    """Start genqueue and serve until Ctrl-C or SIGTERM."""
    from serve_app.runtime import log_relaxed_security, running

    config = config_or_exit(config_file)
    configure()
    server = replace(
        config.server,
        host=host or config.server.host,
        port=port or config.server.port,
        data_dir=str(data_dir) if data_dir else config.server.data_dir,
    )
    config = replace(config, server=server)
    log_relaxed_security(config)
    with running(config, address=address) as live:
        # The store's URL may carry a password: shown with it replaced by ***.
        console.print(f"Store      {redact_url(live.config.redis.url)}")
        console.print(f"API        {live.api_url}/v1")
        console.print(f"Docs       {live.api_url}/docs")
        console.print(f"Dashboard  {live.dashboard_url or '(not started)'}")
        if live.stats_url and live.metrics_url:
            console.print(f"HAProxy    {live.stats_url}  {live.metrics_url}")
        console.print("genqueue ready")
        _wait_for_signal()
        console.print("shutting down")


@app.command()
def down(
    address: Annotated[str, typer.Option(help="The Ray cluster (ray://… or auto).")],
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
) -> None:
    """Stop the actors and the Serve app that `genqueue up --address` left on a cluster."""
    from serve_app.runtime import down as stop_on_cluster

    configure()
    stop_on_cluster(config_or_exit(config_file), address)
    console.print("genqueue stopped on the cluster")


def demo_config(base: Config, users: int, speed: float) -> Config:
    """The demo's set-up: 3 pools of 15 calls a window, 40 slots, offline provider.

    The window is 60 s divided by `speed`; each pool keeps its 15 calls per window, so
    the show is the same, only faster.
    """
    window = 60.0 / speed
    pools = tuple(
        PoolConfig(
            name=f"project-{c}",
            rpm=round(15 * speed),
            keys=(Secret(f"demo-key-project-{c}-0000000000"),),
            window_seconds=window,
        )
        for c in "abc"
    )
    return replace(
        base,
        pools=pools,
        queue=replace(base.queue, slots=40),
        provider=replace(base.provider, name="offline"),
        # Every simulated user starts with enough credits for a fitting (2) or a portrait (1).
        credits=replace(base.credits, default_grant=max(base.credits.default_grant, 2)),
        redis=replace(base.redis, namespace=f"demo-{int(time.time())}"),
    )


@contextlib.contextmanager
def demo_upstream(
    provider: str, pools: tuple[PoolConfig, ...], latency: float, jitter: float
) -> Iterator[str]:
    """For the gemini provider, a Gemini emulator whose projects match the demo's pools."""
    if provider != "gemini":
        yield ""
        return
    from actors.providers.emulator import running
    from actors.providers.gemini_wire import EmulatorConfig, PoolSpec

    specs = tuple(PoolSpec(p.name, p.rpm, tuple(k.reveal() for k in p.keys)) for p in pools)
    window = pools[0].window_seconds
    with running(EmulatorConfig(pools=specs, window_seconds=window, latency=latency, jitter=jitter)) as url:
        yield url


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Simulated users who press generate at once.")] = 60,
    speed: Annotated[float, typer.Option(help="Divide the pools' 60 s window by this.")] = 1.0,
    out: Annotated[Path, typer.Option(help="Folder for the generated images.")] = Path(
        "genqueue-demo-output"
    ),
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
    provider: Annotated[
        str, typer.Option(help="offline (Pillow) or gemini (google-genai against a local Gemini emulator).")
    ] = "offline",
) -> None:
    """The 60-user burst: watch tasks queue, run under slots and rate limits, and finish with images."""
    from serve_app.demo import run_demo
    from serve_app.runtime import running

    configure("WARNING")
    if users < 1 or speed <= 0 or provider not in ("offline", "gemini"):
        console.print("[red]--users must be >= 1, --speed > 0, --provider offline or gemini[/red]")
        raise typer.Exit(2)
    base = config_or_exit(config_file)
    config = demo_config(base, users, speed)
    latency, jitter = base.provider.latency_seconds, base.provider.latency_jitter
    with demo_upstream(provider, config.pools, latency, jitter) as upstream:
        if upstream:
            config = replace(config, provider=replace(config.provider, name="gemini", base_url=upstream))
        where = f", gemini provider -> emulator at {upstream}" if upstream else ""
        console.print(f"starting genqueue (embedded Valkey, local Ray{where}) for {users} users …")
        with running(config, dashboard=False) as live:
            ok = asyncio.run(run_demo(live.api_url, live.config, users, out.absolute(), console))
    raise typer.Exit(0 if ok else 1)


@app.command()
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

    from serve_app.top import fetch, render

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
        try:
            frame = fetch(client)
        except httpx.HTTPError as exc:
            console.print(f"[red]cannot reach genqueue at {url}: {exc}[/red]")
            raise typer.Exit(1) from exc
        if once:
            console.print(render(frame, None))
            return
        with Live(render(frame, None), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                previous, frame = frame, fetch(client)
                live.update(render(frame, previous))


@app.command()
def emulator(
    pool: Annotated[list[str], typer.Option(help="A project NAME:RPM:KEY[,KEY...][:RPD]; repeat for more.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    window_seconds: Annotated[float, typer.Option(help="Length of the rate-limit window.")] = 60.0,
    latency: Annotated[float, typer.Option(help="Seconds each accepted call takes.")] = 0.5,
    jitter: Annotated[float, typer.Option(help="Latency varies uniformly by up to this.")] = 0.2,
    error_rate: Annotated[float, typer.Option(help="Share of accepted calls answered 503.")] = 0.0,
    empty_rate: Annotated[
        float, typer.Option(help="Share of accepted calls answered without an image.")
    ] = 0.0,
    rpd: Annotated[int, typer.Option(help="Calls per project per Pacific day; 0 = unlimited.")] = 0,
    revoked: Annotated[list[str] | None, typer.Option(help="A key answered 403; repeatable.")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated model ids served.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for latency, errors and images.")] = None,
) -> None:
    """A Gemini-compatible image API with per-project quotas, for load tests; serves until Ctrl-C."""
    from actors.providers.emulator import running
    from actors.providers.gemini_wire import DEFAULT_MODELS, EmulatorConfig, parse_pool

    try:
        config = EmulatorConfig(
            pools=tuple(parse_pool(spec) for spec in pool),
            host=host,
            port=port,
            window_seconds=window_seconds,
            latency=latency,
            jitter=jitter,
            error_rate=error_rate,
            empty_rate=empty_rate,
            rpd=rpd,
            revoked=tuple(revoked or ()),
            models=tuple(m.strip() for m in models.split(",") if m.strip()) if models else DEFAULT_MODELS,
            seed=seed,
        )
    except ValueError as exc:
        console.print(f"[red]bad emulator option:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    with running(config) as url:
        console.print(url)
        _wait_for_signal()


@app.command()
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
    from serve_app.burst import percentile

    try:
        projects = parse_pools(pools)
        times = arrivals(users, arrival)
        schedule = simulate(times, slots, latency, projects, window, margin)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
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


@app.command()
def audit(
    redis_url: RedisUrl = None,
    namespace: Namespace = "default",
    data_dir: DataDir = Path(".genqueue"),
    slots: Annotated[int | None, typer.Option(help="Check that running never exceeded this.")] = None,
) -> None:
    """Replay the whole event stream and check every invariant; exit 1 on a violation."""
    from serve_app.ops import run_audit, store_url

    configure("WARNING")
    with store_url(redis_url, data_dir) as url:
        started = time.perf_counter()
        result = asyncio.run(run_audit(url, namespace, slots))
        seconds = time.perf_counter() - started
    r = result.report
    table = Table(title=f"audit of namespace {namespace}", show_header=False)
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
            console.print(f"[red]violation:[/red] {v}")
        raise typer.Exit(1)
    console.print("[green]every invariant holds[/green]")


@app.command()
def replay(
    task: Annotated[str | None, typer.Option(help="Print this task's history.")] = None,
    at: Annotated[
        dt.datetime | None, typer.Option(help="Print the queue as it stood at this moment.")
    ] = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = "default",
    data_dir: DataDir = Path(".genqueue"),
) -> None:
    """One task's timeline (--task ID), or the queue's state at a moment (--at TIMESTAMP)."""
    from serve_app.ops import state_at, store_url, task_timeline

    configure("WARNING")
    if (task is None) == (at is None):
        console.print("[red]give exactly one of --task or --at[/red]")
        raise typer.Exit(2)
    with store_url(redis_url, data_dir) as url:
        if task is not None:
            events = asyncio.run(task_timeline(url, namespace, task))
            if not events:
                console.print(f"[red]no task {task}[/red]")
                raise typer.Exit(1)
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
                table.add_row(f"{offset:8.3f}", e["type"], details)
            console.print(table)
            return
        assert at is not None
        moment = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        state = asyncio.run(state_at(url, namespace, moment))
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


events_app = typer.Typer(help="The event stream.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(token_app, name="token")
app.add_typer(credits_app, name="credits")


@events_app.command("export")
def events_export(
    out: Annotated[Path, typer.Option(help="JSON-lines file to write.")],
    since: Annotated[dt.datetime | None, typer.Option(help="Only events at or after this moment.")] = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = "default",
    data_dir: DataDir = Path(".genqueue"),
) -> None:
    """Write the stream as JSON lines ({id, type, v, task, data}) for archiving."""
    from serve_app.ops import export, store_url

    configure("WARNING")
    moment = since if since is None or since.tzinfo else since.replace(tzinfo=dt.UTC)
    with store_url(redis_url, data_dir) as url, out.open("w") as fh:
        written = asyncio.run(export(url, namespace, fh, moment))
    console.print(f"wrote {written:,} events to {out}")


app.command("loadtest")(loadtest_command)
app.command("cost")(cost_command)


def main() -> None:
    """Entry point of the `genqueue` script."""
    app()


if __name__ == "__main__":
    main()
