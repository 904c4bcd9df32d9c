"""Command-line options shared by the `genqueue` commands that read or write the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDir = Annotated[Path, typer.Option("--data-dir", help="The instance's data directory.")]
RedisUrl = Annotated[
    str | None, typer.Option("--redis-url", envvar="GENQUEUE_REDIS_URL", help="Read this store instead.")
]
Namespace = Annotated[str, typer.Option(help="genqueue namespace.")]
