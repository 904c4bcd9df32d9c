"""Directories and files readable by this user only: the data directory, the store's password and URL."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """`path`, created if need be, open to this user only."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def tighten(directory: Path) -> None:
    """Make what an earlier, looser start left under `directory` this user's only."""
    for path in directory.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def write_private(path: Path, text: str) -> None:
    """Write `text` readable by this user only (a Redis URL may carry a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an older start keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
