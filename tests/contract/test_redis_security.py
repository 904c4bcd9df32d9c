"""A production-like Redis (password, ACL user, TLS, all from the URL), and the embedded one's password."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import stat
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from PIL import Image
from typer.testing import CliRunner

from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import NO_BOUNDS
from serve_app.cli.main import app
from serve_app.http.app import create_app
from serve_app.valkey import embedded_valkey
from tests.helpers import make_config, submitted
from tests.secure_valkey import ADMIN_PASSWORD, USER, USER_PASSWORD, SecureValkey

runner = CliRunner()


def test_the_server_refuses_what_a_managed_redis_refuses(secure_store: SecureValkey) -> None:
    """No password is NOAUTH; the ACL user may not touch other keys nor run dangerous commands."""
    with (
        redis.Redis(port=secure_store.port) as anonymous,
        pytest.raises(redis.exceptions.AuthenticationError),
    ):
        anonymous.get("genqueue:x")
    with redis.Redis(port=secure_store.port, username=USER, password=USER_PASSWORD) as user:
        user.set("genqueue:probe", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.set("other-app:probe", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.flushall()


def test_a_wrong_password_is_an_unavailable_store(secure_store: SecureValkey) -> None:
    """A refused login reads as an unreachable store, never as an empty one."""

    async def main() -> None:
        store = RedisEventStore.from_url(f"redis://{USER}:wrong@127.0.0.1:{secure_store.port}/0", "bad")
        try:
            assert await store.ping() is False
            with pytest.raises(StoreUnavailableError):
                await store.append([submitted()])
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("which", ["password", "tls"])
def test_submit_with_waitaof_over_each_url(secure_store: SecureValkey, which: str) -> None:
    """The submit script and WAITAOF work for `requirepass` and for the ACL user over TLS."""
    url = secure_store.password_url if which == "password" else secure_store.tls_url

    async def main() -> None:
        store = RedisEventStore.from_url(url, f"sec{which}", waitaof=True)
        try:
            receipt = await store.submit(submitted(), NO_BOUNDS)
            assert receipt.id and receipt.position == 0
            assert (await store.read())[0].id == receipt.id
        finally:
            await store.close()

    asyncio.run(main())
    with redis.Redis(port=secure_store.port, password=ADMIN_PASSWORD) as admin:
        assert admin.xlen(f"genqueue:sec{which}:events") == 1


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_the_http_app_submits_over_tls_as_the_acl_user(secure_store: SecureValkey, tmp_path: Path) -> None:
    """Rate limiter, admission script and read models all work within the ACL user's key prefix."""
    config = make_config(secure_store.tls_url, str(tmp_path / "data"))
    app = create_app(config)
    body = {"kind": "photography", "prompt": "p", "images": {"person": _png()}}

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            accepted = await client.post("/v1/tasks", json=body)
            assert accepted.status_code == 202, accepted.text
            view = await client.get(f"/v1/tasks/{accepted.json()['task_id']}")
            assert view.status_code == 200 and view.json()["status"] == "queued"
            assert (await client.get("/readyz")).status_code in (200, 503)

    asyncio.run(main())


def _raw_ping(port: int) -> bytes:
    """What the server answers a PING sent with no login, as any local process could send it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(256)


def test_the_embedded_valkey_refuses_a_client_without_its_password(store_url: str) -> None:
    """Without the password a client gets NOAUTH and cannot write; the URL genqueue hands out logs in."""
    port = urlsplit(store_url).port
    assert port is not None and urlsplit(store_url).password
    assert _raw_ping(port).startswith(b"-NOAUTH")
    with redis.Redis(port=port) as anonymous, pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.hset("genqueue:default:tokens", "forged", "admin")
    with redis.Redis.from_url(store_url) as client:
        assert client.ping() is True


def _loose(directory: Path) -> dict[str, str]:
    """What under `directory` is open beyond its owner: a directory not 0700, a file not 0600."""
    found = {}
    for path in [directory, *directory.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            found[str(path)] = oct(mode)
    return found


def test_the_embedded_valkey_keeps_its_files_private_and_its_password(tmp_path: Path) -> None:
    """The data dir is 0700 and every file 0600, files left looser by an older start included; a
    restart reads the same password."""
    data = tmp_path / "valkey"
    data.mkdir()
    data.chmod(0o755)
    (data / "valkey.log").write_text("from an older start\n")
    (data / "valkey.log").chmod(0o644)
    with embedded_valkey(data) as url:
        with redis.Redis.from_url(url) as client:
            client.set("genqueue:probe", "1")
        password = urlsplit(url).password
        assert password and (data / "password").read_text() == password
        assert any(data.rglob("*.aof")) and _loose(data) == {}
    with embedded_valkey(data) as again, redis.Redis.from_url(again) as client:
        assert urlsplit(again).password == password and client.get("genqueue:probe") == b"1"


def test_the_cli_opens_the_embedded_store_with_its_password(tmp_path: Path) -> None:
    """`genqueue token create` and `genqueue audit` on a stopped instance's data dir start its
    embedded Valkey and log in (a data dir with no store is refused: no command creates one)."""
    with embedded_valkey(tmp_path / "valkey"):
        pass  # the store a `genqueue up` on this data dir left behind
    made = runner.invoke(
        app, ["token", "create", "--user", "ops", "--role", "admin", "--data-dir", str(tmp_path)]
    )
    assert made.exit_code == 0, made.output
    audited = runner.invoke(app, ["audit", "--data-dir", str(tmp_path)])
    assert audited.exit_code == 0, audited.output
    password = (tmp_path / "valkey" / "password").read_text()
    assert password not in made.output + audited.output
