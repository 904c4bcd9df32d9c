"""The `genqueue` command: run an instance, the 60-user demo or the Gemini emulator; mounts the others."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from actors.config import Config, PoolConfig, Secret, redact_url
from actors.logs import configure
from serve_app.cli.access import credits_app, token_app
from serve_app.cli.cost import command as cost_command
from serve_app.cli.loadtest import command as loadtest_command
from serve_app.cli.ops_commands import audit, events_app, plan, replay, top
from serve_app.cli.options import config_or_exit, fail, program

if TYPE_CHECKING:
    from serve_app.runtime import Running

# Help and messages are printed as written (a `[section]` is text, not rich markup), and a
# traceback (`--debug`) never lists local variables: they may hold a store URL's password.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="genqueue: a burst-proof queue for AI images.",
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)
console = Console(highlight=False)


class _Stop(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: leave whatever `genqueue up` is doing, through its clean-up."""


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM stop the block (also while it starts), once: a second signal is
    ignored, so that the clean-up that follows the first runs to its end."""

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise _Stop

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _up_lines(live: Running, token_command: str, ray: str) -> list[str]:
    """What `genqueue up` prints once it serves: where everything is and how to get in."""
    api = live.api_url
    dashboard = live.dashboard_url or "(not started)"
    if live.dashboard_url and live.dashboard_token:
        dashboard += f"  (Ray's; it asks for the token `{ray} get-auth-token` prints)"
    lines = [
        # The store's URL may carry a password: shown with it replaced by ***.
        f"Store      {redact_url(live.config.redis.url)}",
        f"API        {api}/v1",
        f"Docs       {api}/docs",
        f"Pages      {api}/ (users)  {api}/ops (operators, with an admin token)",
        f"Dashboard  {dashboard}",
    ]
    if live.stats_url and live.metrics_url:
        lines.append(f"HAProxy    {live.stats_url}  {live.metrics_url}")
    lines.append(f"Token      {token_command}")
    return lines


def token_command(config_file: Path | None, data_dir: Path | None) -> str:
    """The command that makes an admin token in the store of a `genqueue up` given these flags."""
    words = [program("genqueue"), "token", "create", "--user", "ops", "--role", "admin"]
    if config_file is not None:
        words += ["--config", str(config_file)]
    if data_dir is not None:
        words += ["--data-dir", str(data_dir)]
    return shlex.join(words)


def up(
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where data and blobs live.")] = None,
    address: Annotated[str | None, typer.Option(help="Join this Ray cluster (ray://… or auto).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="On a failure, print its traceback too.")] = False,
) -> None:
    """Start genqueue and serve until Ctrl-C or SIGTERM."""
    from serve_app.cli.store import register
    from serve_app.runtime import StartupError, log_relaxed_security, preflight, resolve, running

    config = config_or_exit(config_file)
    configure()
    server = replace(
        config.server,
        host=host or config.server.host,
        port=port or config.server.port,
        data_dir=str(data_dir) if data_dir else config.server.data_dir,
    )
    config = replace(config, server=server)
    try:
        # Checked before the warnings, so that a start-up failure is the one line it says.
        preflight(resolve(config), joined=address is not None)
        log_relaxed_security(config)
        with _stopped_by_signals(), running(config, address=address) as live:
            note = register(live.config.server.data_dir, config_file, live.api_url)
            try:
                for line in _up_lines(live, token_command(config_file, data_dir), program("ray")):
                    print(line, flush=True)
                print("genqueue ready", flush=True)
                threading.Event().wait()
            finally:
                if note is not None:
                    note.unlink(missing_ok=True)
    except _Stop:
        print("genqueue stopped", flush=True)
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, StartupError):
            fail(f"genqueue up: {exc}")
        first = next(iter(str(exc).strip().splitlines()), "")[:300]
        fail(f"genqueue up failed: {type(exc).__name__}: {first} (--debug prints the traceback)")


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
    from emulator.server import running
    from emulator.wire import EmulatorConfig, PoolSpec

    specs = tuple(PoolSpec(p.name, p.rpm, tuple(k.reveal() for k in p.keys)) for p in pools)
    window = pools[0].window_seconds
    with running(EmulatorConfig(pools=specs, window_seconds=window, latency=latency, jitter=jitter)) as url:
        yield url


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
    from serve_app.cli.demo import run_demo
    from serve_app.runtime import running

    configure("WARNING")
    if users < 1 or speed <= 0 or provider not in ("offline", "gemini"):
        fail("--users must be >= 1, --speed > 0, --provider offline or gemini", 2)
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
    from emulator.server import running
    from emulator.wire import DEFAULT_MODELS, EmulatorConfig, parse_pool

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
        fail(f"bad emulator option: {exc}", 2)
    with contextlib.suppress(_Stop), _stopped_by_signals(), running(config) as url:
        console.print(url, markup=False)
        threading.Event().wait()


# Registered in the order `genqueue --help` lists them.
for command in (up, down, demo, top, emulator, plan, audit, replay):
    app.command()(command)
app.add_typer(events_app, name="events")
app.add_typer(token_app, name="token")
app.add_typer(credits_app, name="credits")
app.command("loadtest")(loadtest_command)
app.command("cost")(cost_command)


def main() -> None:
    """Entry point of the `genqueue` script."""
    app()


if __name__ == "__main__":
    main()
