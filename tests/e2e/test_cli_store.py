"""The store-touching commands act on the store of the instance they are pointed at (by --config,
--data-dir or the run file `genqueue up` leaves), and refuse in one line rather than make a new one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from events.redis_store import RedisEventStore
from serve_app.cli.main import app
from serve_app.cli.store import register
from serve_app.http.auth import authenticate
from serve_app.runtime import RUN_FILE
from serve_app.valkey import embedded_valkey
from tests.conftest import free_port

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def own_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Instances noted by other runs on this machine stay out of these tests' messages."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))


def _genqueue(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """`genqueue ARGS` in a process of its own, as a shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "serve_app.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def _one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


def _role_of(url: str, namespace: str, token: str) -> str:
    async def main() -> str:
        store = RedisEventStore.from_url(url, namespace)
        try:
            return (await authenticate(store, f"Bearer {token}", required=True)).role
        finally:
            await store.close()

    return asyncio.run(main())


def _pretend_running(data: Path, url: str, namespace: str) -> None:
    """The run file a live `genqueue up` (this test's own process) leaves in its data dir."""
    data.mkdir(parents=True, exist_ok=True)
    about = {"pid": os.getpid(), "store_url": url, "namespace": namespace, "api_url": "http://x", "port": 1}
    (data / RUN_FILE).write_text(json.dumps(about))


def test_an_empty_data_dir_is_refused_in_one_line_naming_the_flags(tmp_path: Path) -> None:
    """Nothing runs there and nothing is stored there: every store command refuses, makes nothing."""
    for args in (
        ["token", "create", "--user", "ops", "--role", "admin"],
        ["credits", "grant", "alice", "5"],
        ["audit"],
    ):
        line = _one_line_refusal(_genqueue(*args, cwd=tmp_path, env={"XDG_RUNTIME_DIR": str(tmp_path)}))
        assert line.startswith(f"no genqueue store under {tmp_path.resolve()}/.genqueue")
        assert "--config or --data-dir" in line
    assert not (tmp_path / ".genqueue").exists()


def test_the_refusal_names_the_instance_that_runs_elsewhere(tmp_path: Path) -> None:
    """With an instance noted in the registry, the refusal says which flags reach it."""
    note = register(str(tmp_path / "theirs"), tmp_path / "my.toml", "http://127.0.0.1:8123")
    assert note is not None
    result = runner.invoke(app, ["token", "list", "--data-dir", str(tmp_path / "mine")])
    assert result.exit_code == 1
    assert f"add --config {tmp_path / 'my.toml'} --data-dir {tmp_path / 'theirs'}" in result.output
    assert f"(pid {os.getpid()}, http://127.0.0.1:8123)" in result.output


def test_the_run_file_leads_config_and_data_dir_to_the_running_store(store_url: str, tmp_path: Path) -> None:
    """A token made with --config (whose [server] data_dir has the run file), or with --data-dir,
    lands in the running instance's store and namespace; credits grant and show use it too."""
    namespace, data = f"t{uuid.uuid4().hex[:10]}", tmp_path / "data"
    _pretend_running(data, store_url, namespace)
    config = tmp_path / "c.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n')
    for where in (["--config", str(config)], ["--data-dir", str(data)]):
        made = runner.invoke(app, ["token", "create", "--user", "ops", "--role", "admin", *where])
        assert made.exit_code == 0, made.output
        assert _role_of(store_url, namespace, made.stdout.strip().splitlines()[-1]) == "admin"
    granted = runner.invoke(app, ["credits", "grant", "alice", "7", "--config", str(config)])
    assert granted.exit_code == 0 and "balance 7" in granted.output
    shown = runner.invoke(app, ["credits", "show", "alice", "--data-dir", str(data)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "alice: balance 7" in shown.output and "+7" in shown.output
    (data / RUN_FILE).write_text(json.dumps({"pid": _dead_pid(), "store_url": store_url}))
    gone = runner.invoke(app, ["credits", "show", "alice", "--data-dir", str(data)])
    assert gone.exit_code == 1 and "no genqueue store under" in gone.output


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_stopped_instances_store_is_read_and_one_in_use_is_refused(tmp_path: Path) -> None:
    """With no instance running, the data dir's own Valkey is started on its files; while another
    process holds that store (and no run file names it), the command refuses in one line."""
    data = tmp_path / "data"
    with embedded_valkey(data / "valkey"):
        held = runner.invoke(app, ["token", "list", "--data-dir", str(data)])
        assert held.exit_code == 1
        assert held.output.startswith(f"the store under {data / 'valkey'} is in use by another genqueue")
        assert f"(pid {os.getpid()})" in held.output and len(held.output.splitlines()) == 1
    made = runner.invoke(app, ["token", "create", "--user", "ops", "--data-dir", str(data)])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(app, ["token", "list", "--data-dir", str(data)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "ops" in listed.output


def test_a_stopped_store_is_not_read_by_default_while_an_instance_runs_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told no data dir, a command in a directory with an old `.genqueue` refuses, naming the
    running instance; told `--data-dir .genqueue`, it reads the stopped store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GENQUEUE_SERVER_DATA_DIR", raising=False)
    with embedded_valkey(tmp_path / ".genqueue" / "valkey"):
        pass
    register(str(tmp_path / "theirs"), None, "http://127.0.0.1:8123")
    refused = runner.invoke(app, ["token", "list"])
    assert refused.exit_code == 1 and len(refused.output.splitlines()) == 1
    assert "(it holds a stopped instance's store)" in refused.output
    assert f"add --data-dir {tmp_path / 'theirs'}, or --data-dir {tmp_path / '.genqueue'}" in refused.output
    assert runner.invoke(app, ["token", "list", "--data-dir", ".genqueue"]).exit_code == 0


def test_audit_of_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    """No traceback: the store, its address without the password, and what to check."""
    gone = f"redis://:sekrit@127.0.0.1:{free_port()}/0"
    line = _one_line_refusal(_genqueue("audit", "--redis-url", gone, cwd=tmp_path))
    assert line.startswith("cannot read the event store at redis://:***@127.0.0.1:") and "sekrit" not in line


def test_top_without_an_admin_token_says_it_needs_one(store_url: str, tmp_path: Path) -> None:
    """A 401 from /v1/queue is the missing admin token, said in one line with how to make one."""
    from tests.helpers import make_config
    from tests.served import served

    config = make_config(store_url, str(tmp_path), auth=True)
    with served(config) as live:
        result = _genqueue("top", live.url, "--once", env={"GENQUEUE_TOKEN": ""})
        line = _one_line_refusal(result)
        assert line.startswith("genqueue top needs an admin token and no token was given")
        assert "token create --user ops --role admin" in line
        user = live.token("alice", "user")["Authorization"].split()[1]
        refused = _one_line_refusal(_genqueue("top", live.url, "--once", "--token", user))
        assert "the token was refused (403)" in refused
