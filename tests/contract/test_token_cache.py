"""A replica's token cache on the real store: one read per token, revocations through the stream
tailer at once and through the cache's bound without it, and a bounded memory of bad tokens."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from events.catalogue import TokenRevoked
from events.keys import Keys
from events.redis_store import RedisEventStore
from serve_app.http.auth import (
    AUTH_CACHE_SECONDS,
    UNKNOWN_CACHE_SECONDS,
    UNKNOWN_CACHE_SIZE,
    TokenCache,
    authenticate,
    new_token,
)
from serve_app.http.problems import Unauthorized
from tests.helpers import append_to, eventually, make_config
from tests.served import served


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def hgetalls(probe: aioredis.Redis) -> int:
    """HGETALL calls the server has answered so far."""
    stats = await probe.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


def test_many_requests_with_one_token_read_its_record_once(store_url: str, data_dir: str) -> None:
    """Fifty authentications of one token cost one read of its record, as the server counts them."""
    config = make_config(store_url, data_dir, auth=True)
    secret, made = new_token("alice", "user")
    append_to(config, [made])

    async def main() -> tuple[int, set[str]]:
        store = RedisEventStore.from_url(store_url, config.redis.namespace)
        probe = aioredis.from_url(store_url)
        try:
            before = await hgetalls(probe)
            callers = [await authenticate(store, f"Bearer {secret}", True) for _ in range(50)]
            return await hgetalls(probe) - before, {c.user_id for c in callers}
        finally:
            await probe.aclose()
            await store.close()

    assert asyncio.run(main()) == (1, {"alice"})


def test_without_the_tailer_a_revoked_token_is_refused_once_its_entry_expires(
    store_url: str, data_dir: str
) -> None:
    """With no stream tailer to hear the revocation, a remembered token still passes until
    AUTH_CACHE_SECONDS after it was read, and is a 401 from then on."""
    config = make_config(store_url, data_dir, auth=True)
    secret, made = new_token("bob", "service")
    append_to(config, [made])
    clock = Clock()
    cache = TokenCache(clock=clock)
    header = f"Bearer {secret}"

    async def main() -> None:
        store = RedisEventStore.from_url(store_url, config.redis.namespace)
        try:
            assert (await authenticate(store, header, True, cache=cache)).user_id == "bob"
            await store.append([TokenRevoked(token_id=made.token_id, digest=made.digest, at=time.time())])
            clock.now = AUTH_CACHE_SECONDS - 0.01
            assert (await authenticate(store, header, True, cache=cache)).user_id == "bob"
            clock.now = AUTH_CACHE_SECONDS + 0.01
            with pytest.raises(Unauthorized):
                await authenticate(store, header, True, cache=cache)
        finally:
            await store.close()

    asyncio.run(main())


def test_bad_tokens_are_remembered_briefly_and_in_bounded_number(store_url: str, data_dir: str) -> None:
    """A flood of unknown tokens leaves at most UNKNOWN_CACHE_SIZE remembered; an unknown digest is
    asked again after UNKNOWN_CACHE_SECONDS, so a token made meanwhile then works."""
    config = make_config(store_url, data_dir, auth=True)
    clock = Clock()
    cache = TokenCache(clock=clock)
    secret, made = new_token("carol", "user")

    async def main() -> None:
        store = RedisEventStore.from_url(store_url, config.redis.namespace)
        try:
            for i in range(3 * UNKNOWN_CACHE_SIZE):
                with pytest.raises(Unauthorized):
                    await authenticate(store, f"Bearer gq_bad{i}", True, cache=cache)
            assert cache.sizes == (0, UNKNOWN_CACHE_SIZE)
            with pytest.raises(Unauthorized):
                await authenticate(store, f"Bearer {secret}", True, cache=cache)
            await store.append([made])
            with pytest.raises(Unauthorized):  # still remembered as unknown
                await authenticate(store, f"Bearer {secret}", True, cache=cache)
            clock.now = UNKNOWN_CACHE_SECONDS + 0.01
            assert (await authenticate(store, f"Bearer {secret}", True, cache=cache)).user_id == "carol"
        finally:
            await store.close()

    asyncio.run(main())


def test_a_revoked_token_is_refused_as_soon_as_the_replica_hears_of_it(store_url: str, data_dir: str) -> None:
    """Over HTTP: a token the replica remembers passes even with its record gone from the store, and
    is a 401 on the next request once its token.revoked event reaches the replica, well within
    the cache's own bound."""
    config = make_config(store_url, data_dir, auth=True)
    secret, made = new_token("dave", "user")
    append_to(config, [made])
    headers = {"Authorization": f"Bearer {secret}"}
    with served(config) as app, httpx.Client(base_url=app.url, timeout=10) as client:
        assert client.get("/v1/me", headers=headers).status_code == 200
        read_at = time.monotonic()
        with redis.Redis.from_url(store_url) as r:
            r.delete(Keys(config.redis.namespace).token(made.digest))  # the store forgets, no event
        assert client.get("/v1/me", headers=headers).status_code == 200
        append_to(config, [TokenRevoked(token_id=made.token_id, digest=made.digest, at=time.time())])
        eventually(
            lambda: client.get("/v1/me", headers=headers).status_code == 401,
            timeout=AUTH_CACHE_SECONDS - 2,
            what="the revoked token refused",
        )
        assert time.monotonic() - read_at < AUTH_CACHE_SECONDS  # not the cache's expiry
