"""The `genqueue` command: run an instance, or run the 60-user demo on the embedded default."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from actors.config import Config, ConfigError, PoolConfig, Secret, load
from actors.logs import configure

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="genqueue: a burst-proof queue for AI images."
)
console = Console()


def _load(config_file: Path | None) -> Config:
    try:
        return load(config_file)
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from exc


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
    from serve_app.runtime import running

    configure()
    config = _load(config_file)
    server = replace(
        config.server,
        host=host or config.server.host,
        port=port or config.server.port,
        data_dir=str(data_dir) if data_dir else config.server.data_dir,
    )
    config = replace(config, server=server)
    with running(config, address=address) as live:
        console.print(f"API        {live.api_url}/v1")
        console.print(f"Docs       {live.api_url}/docs")
        console.print(f"Dashboard  {live.dashboard_url or '(not started)'}")
        console.print("genqueue ready")
        _wait_for_signal()
        console.print("shutting down")


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
            keys=(Secret(f"demo-{c}"),),
            window_seconds=window,
        )
        for c in "abc"
    )
    return replace(
        base,
        pools=pools,
        queue=replace(base.queue, slots=40),
        provider=replace(base.provider, name="offline"),
        redis=replace(base.redis, namespace=f"demo-{int(time.time())}"),
    )


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Simulated users who press generate at once.")] = 60,
    speed: Annotated[float, typer.Option(help="Divide the pools' 60 s window by this.")] = 1.0,
    out: Annotated[Path, typer.Option(help="Folder for the generated images.")] = Path(
        "genqueue-demo-output"
    ),
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
) -> None:
    """The 60-user burst: watch tasks queue, run under slots and rate limits, and finish with images."""
    from serve_app.demo import run_demo
    from serve_app.runtime import running

    configure("WARNING")
    if users < 1 or speed <= 0:
        console.print("[red]--users must be >= 1 and --speed > 0[/red]")
        raise typer.Exit(2)
    config = demo_config(_load(config_file), users, speed)
    console.print(f"starting genqueue (embedded Valkey, local Ray) for {users} users …")
    with running(config, dashboard=False) as live:
        ok = asyncio.run(run_demo(live.api_url, live.config, users, out.absolute(), console))
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Entry point of the `genqueue` script."""
    app()


if __name__ == "__main__":
    main()
