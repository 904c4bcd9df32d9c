"""The submit gate: submits enter the app a bounded number at a time, in arrival order inside a
priority lane, lanes by weight; other requests never wait on it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from serve_app.http.gate import Admitted, SubmitGate, body_lane
from tests.helpers import CountedPlaces


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


async def _until(changed: asyncio.Condition, ready: Any) -> None:
    async with asyncio.timeout(5), changed:
        await changed.wait_for(ready)


def test_a_freed_place_goes_to_the_lane_furthest_below_its_share() -> None:
    """Ten free holders, then 20 free and 20 paid submits waiting (the free ones first): as the
    free holders leave, paid takes each place until it holds 9 of 10 (its weight 9 against 1),
    and free keeps 1; inside each lane, first come first served."""

    async def body() -> None:
        places = CountedPlaces(10, {"paid": 9.0, "free": 1.0})
        changed = asyncio.Condition()
        entered: list[str] = []
        leave = {
            name: asyncio.Event() for name in [f"f{i}" for i in range(30)] + [f"p{i}" for i in range(20)]
        }

        async def hold(name: str, lane: str) -> None:
            async with places.place(lane):
                entered.append(name)
                async with changed:
                    changed.notify_all()
                await leave[name].wait()
            async with changed:
                changed.notify_all()

        tasks = [asyncio.create_task(hold(f"f{i}", "free")) for i in range(10)]
        await _until(changed, lambda: len(entered) == 10)
        tasks += [asyncio.create_task(hold(f"f{i}", "free")) for i in range(10, 30)]
        tasks += [asyncio.create_task(hold(f"p{i}", "paid")) for i in range(20)]
        async with asyncio.timeout(5):
            await places.asked_by(50)
        assert places.waiting() == {"free": 20, "paid": 20}
        for i in range(10):
            leave[f"f{i}"].set()
            await _until(changed, lambda i=i: len(entered) == 11 + i)
        assert places.held() == {"paid": 9, "free": 1}
        assert entered[10:] == [f"p{i}" for i in range(9)] + ["f10"]
        for event in leave.values():
            event.set()
        await asyncio.gather(*tasks)
        assert places.held() == {} and places.waiting() == {}
        assert [n for n in entered if n.startswith("p")] == [f"p{i}" for i in range(20)]
        assert [n for n in entered if n.startswith("f")] == [f"f{i}" for i in range(30)]

    asyncio.run(body())


def test_a_cancelled_waiter_leaves_the_line_and_a_place_given_as_it_is_cancelled_is_handed_on() -> None:
    async def body() -> None:
        places = CountedPlaces(1, {"paid": 9.0, "free": 1.0})
        first = asyncio.Event()
        release = asyncio.Event()
        given: list[asyncio.Task[str]] = []

        async def holder() -> None:
            async with places.place("free"):
                first.set()
                await release.wait()
            # The place went to the paid waiter as the block ended; it is cancelled before it runs.
            assert places.held() == {"paid": 1}
            given[0].cancel()

        held = asyncio.create_task(holder())
        await first.wait()

        async def waiter(lane: str) -> str:
            async with places.place(lane):
                return lane

        gone = asyncio.create_task(waiter("paid"))
        later = asyncio.create_task(waiter("free"))
        async with asyncio.timeout(5):
            await places.asked_by(3)
        assert places.waiting() == {"paid": 1, "free": 1}
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        assert places.waiting() == {"free": 1}
        given.append(asyncio.create_task(waiter("paid")))
        async with asyncio.timeout(5):
            await places.asked_by(4)
        assert places.waiting() == {"free": 1, "paid": 1}
        release.set()
        await held
        with contextlib.suppress(asyncio.CancelledError):
            await given[0]
        assert given[0].cancelled()
        assert await asyncio.wait_for(later, 5) == "free"
        assert places.held() == {} and places.waiting() == {}

    asyncio.run(body())


def _json_scope(name: str, path: str = "/v1/tasks") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": [], "name": name}


def test_a_submit_waits_in_its_tokens_lane_or_the_lane_a_services_json_body_names() -> None:
    """Behind one held place: a service's submits naming `paid` go ahead of earlier ones naming
    `free` or an unknown lane (its token's, free), and ahead of a user token's that names `paid`
    (a user token waits in its own lane) and of a multipart body's."""

    async def body() -> None:
        entered: list[str] = []
        changed = asyncio.Condition()
        release = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            entered.append(scope["name"])
            async with changed:
                changed.notify_all()
            if scope["name"] == "holder":
                await release.wait()

        async def admit(scope: dict[str, Any]) -> Admitted:
            user = scope["name"].startswith("user")
            return Admitted(scope["name"], 0, "free", names_lane=not user)

        gate = SubmitGate(app, limit=1, admit=admit, lanes={"paid": 9.0, "free": 1.0})
        gate._places = places = CountedPlaces(1, gate.lanes)
        bodies = {
            "holder": b"{}",
            "svc-free": b'{"kind": "photography", "lane": "free"}',
            "svc-unknown": b'{"lane": "gold"}',
            "user-paid": b'{"lane": "paid"}',
            "svc-multipart": b'--x\r\nContent-Disposition: form-data; name="lane"\r\n\r\npaid\r\n--x--',
            "svc-paid": b'{"images": {"selfie": "aGk="}, "lane": "paid"}',
            "svc-batch": b'{"lane": "paid"}',
        }

        async def call(name: str) -> None:
            sent = iter([{"type": "http.request", "body": bodies[name], "more_body": False}])

            async def receive() -> dict[str, Any]:
                return next(sent)

            path = "/v1/tasks/batch" if name == "svc-batch" else "/v1/tasks"
            await gate(_json_scope(name, path), receive, _drop)

        tasks = [asyncio.create_task(call("holder"))]
        await _until(changed, lambda: entered == ["holder"])
        for name in ("svc-free", "svc-unknown", "user-paid", "svc-multipart", "svc-batch", "svc-paid"):
            tasks.append(asyncio.create_task(call(name)))
        async with asyncio.timeout(5):
            await places.asked_by(7)
        assert places.waiting() == {"free": 5, "paid": 1}
        release.set()
        await asyncio.gather(*tasks)
        assert entered == [
            "holder",
            "svc-paid",
            "svc-free",
            "svc-unknown",
            "user-paid",
            "svc-multipart",
            "svc-batch",
        ]

    asyncio.run(body())


@pytest.mark.parametrize(
    ("body", "lane"),
    [
        (b'{"kind": "photography", "lane": "paid"}', "paid"),
        (b'{"lane": "gold"}', None),
        (b'{"lane": 5}', None),
        (b'{"lane": null}', None),
        (b'{"prompt": "no lane"}', None),
        (b"\xff\xfe not json", None),
        (b"", None),
        (b'{"a": ' * 100_000, None),
        (b"[" * 100_000, None),
    ],
)
def test_the_gate_reads_only_a_configured_lane_from_a_json_body(body: bytes, lane: str | None) -> None:
    """Anything else (no lane, an unknown one, not text, not JSON, nested past any depth) leaves the
    submit in its token's lane, for the route to answer."""
    half = len(body) // 2
    messages = [
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.request", "body": body[half:], "more_body": False},
    ]
    assert body_lane(messages, {"paid": 9.0, "free": 1.0}) == lane
