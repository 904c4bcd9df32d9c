"""A production-like Redis: a password, an ACL user held to genqueue's keys, and TLS, all from the URL."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore
from events.store import NO_BOUNDS
from serve_app.api import create_app
from tests.helpers import make_config, submitted
from tests.secure_valkey import ADMIN_PASSWORD, USER, USER_PASSWORD, SecureValkey


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
