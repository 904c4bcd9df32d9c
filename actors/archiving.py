"""Where this genqueue's archive is, from its configuration."""

from __future__ import annotations

from pathlib import Path

from actors.config import Config
from events.archive import Archive


def archive_url(config: Config) -> str:
    """The configured archive URL: `[archive] url`, or `file://<data_dir>/archive`."""
    return config.archive.url or f"file://{Path(config.server.data_dir).resolve()}/archive"


def archive_of(config: Config) -> Archive:
    """The archive every process of this genqueue reads and writes."""
    return Archive(archive_url(config))
