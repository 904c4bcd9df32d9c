"""An ingress replica opens what a burst of submits needs before its first request."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from serve_app.http.context import Context
from tests.helpers import make_config


def test_warming_up_opens_a_connection_per_concurrent_submit(store_url: str, data_dir: str) -> None:
    """The event store's pool (which also checks submit rates, in the submit's script) holds
    `submit_concurrency` open connections afterwards, as the server's own client list shows."""
    config = make_config(store_url, data_dir)
    width = config.server.submit_concurrency

    async def main() -> tuple[int, int]:
        probe = aioredis.from_url(store_url)
        try:
            before = len(await probe.client_list())
            ctx = Context(config)
            await ctx.warm()
            after = len(await probe.client_list())
            await ctx.store.close()
            return before, after
        finally:
            await probe.aclose()

    before, after = asyncio.run(main())
    assert after - before >= width
