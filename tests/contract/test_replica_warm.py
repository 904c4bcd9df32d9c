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

    async def main() -> int:
        probe = aioredis.from_url(store_url)
        try:
            # Client ids only grow: the clients opened since are those above the newest now
            # (other tests' clients may come and go on the same server meanwhile).
            newest = max(int(c["id"]) for c in await probe.client_list())
            ctx = Context(config)
            await ctx.warm()
            opened = sum(int(c["id"]) > newest for c in await probe.client_list())
            await ctx.store.close()
            return opened
        finally:
            await probe.aclose()

    assert asyncio.run(main()) >= width
