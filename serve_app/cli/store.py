"""Which store a `genqueue` command acts on: the Redis it is given, or the one `genqueue up` runs
for the same config and data directory, never a new embedded store made by mistake.

In order: `--redis-url` (or GENQUEUE_REDIS_URL), the config's `[redis] url`, the store named in
the data directory's run file by a live `genqueue up`, the embedded Valkey started on the data
directory's files when no instance runs there (unless the command was told no data directory
while an instance runs elsewhere: that one is most likely meant). Otherwise the command refuses
in one line, naming the instances that run elsewhere and the flags that reach them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from actors.config import redact_url
from events.errors import StoreUnavailableError
from serve_app.cli.options import config_or_exit, fail
from serve_app.haproxy import alive
from serve_app.private import private_dir, write_private
from serve_app.runtime import RUN_FILE


@dataclass(frozen=True, slots=True)
class Store:
    """The store a command reads or writes: its URL and the genqueue namespace in it."""

    url: str
    namespace: str


def _read(path: Path) -> dict[str, Any] | None:
    """A run or registry file whose process still runs, else None."""
    try:
        about = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = about.get("pid") if isinstance(about, dict) else None
    return about if isinstance(pid, int) and pid > 0 and alive(pid) else None


def registry() -> Path:
    """Where each running `genqueue up` leaves a note of its data directory and config (no
    secrets): this user's runtime directory, else ~/.cache."""
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".cache")
    return Path(base) / "genqueue" / "instances"


def register(data_dir: str, config_file: Path | None, api_url: str) -> Path | None:
    """Note this process as a running instance; returns the note (None when it cannot be written)."""
    note = {
        "pid": os.getpid(),
        "data_dir": data_dir,
        "config": str(config_file.resolve()) if config_file else "",
        "api_url": api_url,
    }
    try:
        path = private_dir(registry()) / f"{os.getpid()}.json"
        write_private(path, json.dumps(note))
    except OSError:
        return None
    return path


def running_elsewhere(data_dir: Path) -> list[dict[str, Any]]:
    """The live instances noted in the registry whose data directory is not `data_dir`."""
    found = []
    with contextlib.suppress(OSError):
        for path in sorted(registry().glob("*.json")):
            about = _read(path)
            if about is None:
                path.unlink(missing_ok=True)  # left by an instance that is gone
            elif about.get("data_dir") != str(data_dir):
                found.append(about)
    return found


def _refusal(data_dir: Path, stopped: bool) -> str | None:
    """The one-line refusal for `data_dir`, which runs no instance and holds no store (or holds a
    stopped one's while another runs elsewhere, `stopped`); None when nothing runs elsewhere
    and the stopped store may be read."""
    others = running_elsewhere(data_dir)
    if stopped and not others:
        return None
    where = f"no genqueue store under {data_dir}"
    if stopped:
        where = f"no genqueue runs under {data_dir} (it holds a stopped instance's store)"
    if not others:
        return (
            f"{where} (no instance runs there and it holds no data): start one with genqueue up, or "
            "pass the --config or --data-dir that genqueue up was given (or --redis-url)"
        )
    first = others[0]
    flags = f"--data-dir {first['data_dir']}"
    if first.get("config"):
        flags = f"--config {first['config']} {flags}"
    more = f"; {len(others) - 1} more instance(s) run" if len(others) > 1 else ""
    use_stopped = f", or --data-dir {data_dir} for the stopped store" if stopped else ""
    running = f"genqueue up (pid {first['pid']}, {first['api_url']}) runs with {flags}"
    return f"{where}; {running}: add {flags}{use_stopped}{more}"


@contextlib.contextmanager
def store(
    config_file: Path | None, data_dir: Path | None, redis_url: str | None, namespace: str | None
) -> Iterator[Store]:
    """The store for these options for the block; a store that cannot be found or read ends the
    command with one line on stderr (exit 1)."""
    from serve_app.valkey import StoreInUseError, embedded_valkey

    config = config_or_exit(config_file)
    url = redis_url or config.redis.url
    try:
        if url:
            yield Store(url, namespace or config.redis.namespace)
            return
        data = Path(data_dir or config.server.data_dir).expanduser().resolve()
        run = _read(data / RUN_FILE)
        if run is not None and run.get("store_url"):
            url = str(run["store_url"])
            yield Store(url, namespace or str(run.get("namespace") or config.redis.namespace))
            return
        if not (data / "valkey").is_dir():
            fail(_refusal(data, stopped=False) or "")
        told = data_dir or config_file or "GENQUEUE_SERVER_DATA_DIR" in os.environ
        refused = None if told else _refusal(data, stopped=True)
        if refused:
            fail(refused)
        with contextlib.ExitStack() as stack:
            try:
                url = stack.enter_context(embedded_valkey(data / "valkey"))
            except StoreInUseError as exc:
                fail(f"{exc}, not a running genqueue up; try again when it has finished")
            yield Store(url, namespace or config.redis.namespace)
    except (StoreUnavailableError, RedisError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        shown = redact_url(url) if url else "the embedded store"
        fail(f"cannot read the event store at {shown}: {why}; check --redis-url, --config or --data-dir")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
