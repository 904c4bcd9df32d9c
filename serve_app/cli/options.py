"""Command-line options shared by the `genqueue` commands, and how a command fails: one line on
stderr, never a traceback."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from actors.config import Config, ConfigError, load

ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="The TOML config file (the one `genqueue up` was given).")
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The data directory `genqueue up` was given "
        "(default: the config's [server] data_dir, .genqueue).",
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        envvar="GENQUEUE_REDIS_URL",
        help="Use this Redis instead of the instance's (default: the config's [redis] url).",
    ),
]
Namespace = Annotated[
    str | None,
    typer.Option(
        help="genqueue namespace (default: the running instance's, else the config's [redis] namespace)."
    ),
]

# Messages are printed as they are: a `[section]` in one is text, never rich markup.
err = Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Exit with `code` after printing `message` on stderr as one line."""
    err.print(" ".join(message.split()), style="red", markup=False)
    raise typer.Exit(code)


def config_or_exit(config_file: Path | None) -> Config:
    """The configuration, or exit 2 with the config error on stderr."""
    try:
        return load(config_file)
    except ConfigError as exc:
        fail(f"config error: {exc}", 2)


def program(name: str) -> str:
    """How to run this installation's `name` script from here: its bare name when PATH finds
    this one, else its path (relative when under the current directory)."""
    here = Path(sys.executable).parent / name
    if not here.exists():
        return name
    found = shutil.which(name)
    if found and Path(found).resolve() == here.resolve():
        return name
    relative = os.path.relpath(here)
    return str(here) if relative.startswith("..") else relative
