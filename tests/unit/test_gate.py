"""The submit gate: submits enter the app a bounded number at a time, in arrival order; other
requests never wait on it."""

from __future__ import annotations

import asyncio
from typing import Any

from serve_app.http.gate import SubmitGate


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def _nothing() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _drop(message: Any) -> None:
    return None


def test_submits_enter_in_arrival_order_at_most_limit_at_once_and_reads_pass() -> None:
    async def body() -> None:
        inside: list[str] = []
        entered: list[str] = []
        release = {name: asyncio.Event() for name in ("a", "b", "c", "read")}
        changed = asyncio.Condition()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            name = scope["name"]
            entered.append(name)
            inside.append(name)
            async with changed:
                changed.notify_all()
            await release[name].wait()
            inside.remove(name)

        gate = SubmitGate(app, limit=2)

        async def call(name: str, method: str, path: str) -> None:
            await gate(_scope(method, path) | {"name": name}, _nothing, _drop)

        tasks = [asyncio.create_task(call(n, "POST", "/v1/tasks")) for n in ("a", "b", "c")]
        tasks.append(asyncio.create_task(call("read", "GET", "/v1/tasks/x")))
        async with asyncio.timeout(5), changed:
            await changed.wait_for(lambda: len(entered) >= 3)
        # two submits and the read are in; the third submit waits for a place
        assert sorted(inside) == ["a", "b", "read"]
        release["b"].set()
        async with asyncio.timeout(5), changed:
            await changed.wait_for(lambda: "c" in entered)
        assert entered == ["a", "b", "read", "c"] or entered == ["a", "read", "b", "c"]
        for event in release.values():
            event.set()
        await asyncio.gather(*tasks)
        assert inside == []

    asyncio.run(body())
