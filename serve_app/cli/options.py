"""Command-line options shared by the `genqueue` commands that read or write the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from actors.config import Config, ConfigError, load

DataDir = Annotated[Path, typer.Option("--data-dir", help="The instance's data directory.")]
RedisUrl = Annotated[
    str | None, typer.Option("--redis-url", envvar="GENQUEUE_REDIS_URL", help="Read this store instead.")
]
Namespace = Annotated[str, typer.Option(help="genqueue namespace.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML config file.")]


def config_or_exit(config_file: Path | None) -> Config:
    """The configuration, or exit 2 with the config error on stderr."""
    try:
        return load(config_file)
    except ConfigError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from exc
