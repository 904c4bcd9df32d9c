"""Slow uploads cannot block submits: a submit is admitted from its headers, its body must arrive
in time, and one token may have only so many submits in progress."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from actors.config import CreditsConfig, ServerConfig
from serve_app.cli.burst import payload
from tests.helpers import make_config
from tests.served import App, served


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    base = make_config(
        store_url, str(tmp_path_factory.mktemp("slow")), auth=True, credits=CreditsConfig(default_grant=1000)
    )
    config = replace(
        base,
        server=replace(ServerConfig(), submit_concurrency=4),
        limits=replace(base.limits, body_read_seconds=1.0, max_submits_per_token=2),
    )
    with served(config) as running:
        yield running


async def stall(app: App, headers: dict[str, str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A `POST /v1/tasks` whose headers promise a body of which only one byte is sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
    lines = [
        "POST /v1/tasks HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        "Content-Length: 100000",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n{").encode())
    await writer.drain()
    return reader, writer


async def status_of(reader: asyncio.StreamReader, within: float) -> int:
    """The status code of the response the server sends on a stalled connection."""
    async with asyncio.timeout(within):
        line = await reader.readline()
    return int(line.split()[1])


def submit_body() -> dict[str, Any]:
    body = payload(0, "photography")
    del body["user_id"]
    return body


def test_uploads_without_a_token_hold_no_place_and_a_valid_submit_is_answered(app: App) -> None:
    """Twenty stalled uploads with no token are each refused 401 from their headers, and a valid
    submit made while they stay open is accepted at once."""
    user = app.token("patient", "user")

    async def run() -> tuple[list[int], int]:
        open_ = [await stall(app, {}) for _ in range(20)]
        codes = await asyncio.gather(*(status_of(reader, 5) for reader, _ in open_))
        async with httpx.AsyncClient(base_url=app.url, timeout=5, headers=user) as client:
            answer = await client.post("/v1/tasks", json=submit_body())
        for _, writer in open_:
            writer.close()
        return list(codes), answer.status_code

    codes, status = asyncio.run(run())
    assert codes == [401] * 20 and status == 202


def test_a_body_that_does_not_arrive_in_time_is_a_408_problem(app: App) -> None:
    """An authenticated upload that stalls is answered 408 problem+json after the read deadline,
    and the connection is closed."""
    user = app.token("staller", "user")

    async def run() -> bytes:
        reader, writer = await stall(app, user)
        async with asyncio.timeout(10):
            answer = await reader.read()  # to the end: the server closes the connection
        writer.close()
        return answer

    answer = asyncio.run(run())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"application/problem+json" in head and b"did not arrive within 1 s" in body


def test_one_token_has_only_so_many_submits_in_progress_and_others_are_not_held_up(app: App) -> None:
    """With two stalled uploads of one token in progress, its third submit is a 429 problem at
    once, while another token's submit is accepted; the token may submit again once they end."""
    hog, other = app.token("hog", "user"), app.token("other", "user")

    async def run() -> tuple[int, str, int, int]:
        open_ = [await stall(app, hog) for _ in range(2)]
        async with httpx.AsyncClient(base_url=app.url, timeout=5) as client:
            third = await client.post("/v1/tasks", json=submit_body(), headers=hog)
            theirs = await client.post("/v1/tasks", json=submit_body(), headers=other)
            for reader, _ in open_:
                assert await status_of(reader, 10) == 408
            for _, writer in open_:
                writer.close()
            again = await client.post("/v1/tasks", json=submit_body(), headers=hog)
        return third.status_code, third.headers.get("content-type", ""), theirs.status_code, again.status_code

    third, kind, theirs, again = asyncio.run(run())
    assert (third, kind) == (429, "application/problem+json")
    assert theirs == 202 and again == 202
