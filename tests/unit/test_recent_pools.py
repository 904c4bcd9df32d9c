"""The replica's cached pools' views: never views read before an event its caller has heard of."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from serve_app.http import context as context_module
from serve_app.http.context import POOLS_FRESH_SECONDS, Context
from tests.helpers import make_config


def test_a_read_begun_too_long_ago_is_not_joined_and_a_late_old_read_does_not_overwrite_a_newer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A read of the pools' views is still on its way (a slow round trip) when, more than
    POOLS_FRESH_SECONDS after it began, someone asks: they get a read begun after their ask,
    not the old one; and when the old read comes back last, the cache keeps the newer views."""
    clock = SimpleNamespace(now=1000.0, reads=0, read=asyncio.Event())

    def monotonic() -> float:
        """The test's clock; each ask reads it once, as it decides to join a read or begin one."""
        clock.reads += 1
        clock.read.set()
        return float(clock.now)

    monkeypatch.setattr(context_module, "time", SimpleNamespace(monotonic=monotonic, time=time.time))
    replies: list[asyncio.Future[list[Any]]] = []
    began: list[asyncio.Event] = []  # set as each read begins

    async def read_pools(store: Any, config: Any) -> list[Any]:
        replies.append(asyncio.get_running_loop().create_future())
        began[len(replies) - 1].set()
        return await replies[-1]

    monkeypatch.setattr(context_module, "read_pools", read_pools)

    async def begun(n: int) -> None:
        """Until the n-th read has begun (an ask runs a few turns of the loop before it reads)."""
        await asyncio.wait_for(began[n - 1].wait(), 5)

    async def scenario() -> tuple[list[Any], list[Any], list[Any], int]:
        began.extend(asyncio.Event() for _ in range(3))
        ctx = Context(make_config("redis://127.0.0.1:1/0", str(tmp_path / "data")))
        first = asyncio.ensure_future(ctx.recent_pools())  # begins read 1 at t
        await begun(1)
        clock.now += POOLS_FRESH_SECONDS / 2
        clock.read.clear()
        joined = asyncio.ensure_future(ctx.recent_pools())  # read 1 is recent enough: joined
        await asyncio.wait_for(clock.read.wait(), 5)  # it has asked before the clock moves on
        clock.now += POOLS_FRESH_SECONDS  # read 1 began 1.5 x the bound ago
        later = asyncio.ensure_future(ctx.recent_pools())
        await begun(2)  # a second read began for the later ask
        replies[1].set_result(["new"])
        assert await later == ["new"]
        replies[0].set_result(["old"])
        old = await first
        assert await joined == old
        cached = await ctx.recent_pools()  # within the bound of read 2: the cache, not read 1
        return old, cached, await later, len(replies)

    old, cached, later, reads = asyncio.run(scenario())
    assert old == ["old"] and later == ["new"] and cached == ["new"] and reads == 2 and clock.reads == 4
