"""Which lane a submit rides: the body's (service and admin tokens), the token's, the default;
a lane not configured is a 422 naming `lane`, a user token naming another lane a 403."""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from actors.config import LaneConfig
from events.catalogue import TaskSubmitted
from serve_app.http.app import create_app
from serve_app.http.auth import new_token
from serve_app.http.gate import SubmitGate
from tests.helpers import CountedPlaces, append_to, make_config, with_store

LANES = (LaneConfig("paid", 9.0, reserved=0.2), LaneConfig("free", 1.0, default=True))


def body(**extra: Any) -> dict[str, Any]:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    return {"kind": "photography", "images": {"person": base64.b64encode(buf.getvalue()).decode()}, **extra}


def test_a_submit_rides_the_lane_its_token_or_body_names(store_url: str, tmp_path: Path) -> None:
    """A service token names any configured lane per task, or gets the default; a user token
    made with lane paid rides paid, may name paid, and gets a 403 naming another; an unknown
    lane is a 422 naming the field, and nothing of a refused submit is written."""
    config = replace(make_config(store_url, str(tmp_path), auth=True), lanes=LANES)
    service, service_made = new_token("app", "service")
    vip, vip_made = new_token("vip", "user", lane="paid")
    plain, plain_made = new_token("ann", "user")
    admin, admin_made = new_token("root", "admin")
    append_to(config, [service_made, vip_made, plain_made, admin_made])

    async def scenario() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def post(token: str, **extra: Any) -> httpx.Response:
                return await client.post(
                    "/v1/tasks", json=body(**extra), headers={"Authorization": f"Bearer {token}"}
                )

            answers = {
                "service paid": await post(service, user_id="s1", lane="paid"),
                "service default": await post(service, user_id="s2"),
                "vip own": await post(vip),
                "vip names paid": await post(vip, lane="paid"),
                "vip names free": await post(vip, lane="free"),
                "ann": await post(plain),
                "unknown": await post(service, user_id="s3", lane="gold"),
            }
            bearer = {"Authorization": f"Bearer {admin}"}
            answers["queue"] = await client.get("/v1/queue", headers=bearer)
            answers["view"] = await client.get(answers["ann"].headers["location"], headers=bearer)
            return answers

    answers = asyncio.run(scenario())
    queue, view = answers.pop("queue").json(), answers.pop("view").json()
    codes = {name: a.status_code for name, a in answers.items()}
    assert codes == {
        "service paid": 202,
        "service default": 202,
        "vip own": 202,
        "vip names paid": 202,
        "vip names free": 403,
        "ann": 202,
        "unknown": 422,
    }
    assert answers["unknown"].json()["errors"] == [{"field": "lane", "message": "one of paid, free"}]
    assert answers["vip names free"].headers["content-type"].startswith("application/problem+json")
    events = with_store(config, lambda store: store.read_range())
    lanes = {s.event.user_id: s.event.lane for s in events if isinstance(s.event, TaskSubmitted)}
    assert lanes == {"s1": "paid", "s2": "free", "vip": "paid", "ann": "free"}
    assert queue["lanes"] == {
        "paid": {"waiting": 3, "weight": 9.0, "reserved": 0.2},
        "free": {"waiting": 2, "weight": 1.0, "reserved": 0.0},
    }
    # ann's is free's second task: the paid tasks that start before it come first (shares of
    # the 4 slots: 3 paid, 1 free), then s2's.
    assert view["lane"] == "free" and view["position"] == 4


def test_without_lanes_naming_one_is_a_422(store_url: str, tmp_path: Path) -> None:
    """A genqueue with no [[lanes]] takes no lane: the 422 says so; without one, lane is ""."""
    config = make_config(store_url, str(tmp_path))

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            named = await client.post("/v1/tasks", json=body(user_id="u1", lane="paid"))
            plain = await client.post("/v1/tasks", json=body(user_id="u2"))
            return named, plain

    named, plain = asyncio.run(scenario())
    assert named.status_code == 422 and plain.status_code == 202
    assert named.json()["errors"] == [
        {"field": "lane", "message": "left out: this genqueue has no [[lanes]]"}
    ]
    events = with_store(config, lambda store: store.read_range())
    assert [s.event.lane for s in events if isinstance(s.event, TaskSubmitted)] == [""]


def _gate(app: Any) -> SubmitGate:
    """The app's submit gate, in its built middleware stack."""
    layer = app.middleware_stack
    while not isinstance(layer, SubmitGate):
        layer = layer.app
    return layer


def test_submits_waiting_at_the_door_enter_paid_first(store_url: str, tmp_path: Path) -> None:
    """With the replica's one submit place held, a service's default-lane submit, a plain user's,
    a paid user's (its token's lane), a service's naming paid and another service default wait
    at the gate in that order; as the place frees, the two paid ones enter first, then the free
    ones as they came, and the queue's log shows them accepted in that order."""
    base = make_config(store_url, str(tmp_path), auth=True)
    config = replace(base, lanes=LANES, server=replace(base.server, submit_concurrency=1))
    service, service_made = new_token("app", "service")
    vip, vip_made = new_token("vip", "user", lane="paid")
    plain, plain_made = new_token("ann", "user")
    append_to(config, [service_made, vip_made, plain_made])
    arrivals = [
        ("s-free-1", service, {"user_id": "s-free-1"}),
        ("ann", plain, {}),
        ("vip", vip, {}),
        ("s-paid", service, {"user_id": "s-paid", "lane": "paid"}),
        ("s-free-2", service, {"user_id": "s-free-2"}),
    ]

    async def scenario() -> list[int]:
        app = create_app(config)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200  # builds the middleware stack
            gate = _gate(app)
            gate._places = places = CountedPlaces(1, gate.lanes)
            pending = []
            async with places.place("free"):  # held, as by a submit in progress
                for n, (_, token, extra) in enumerate(arrivals, start=1):
                    headers = {"Authorization": f"Bearer {token}"}
                    pending.append(
                        asyncio.create_task(client.post("/v1/tasks", json=body(**extra), headers=headers))
                    )
                    async with asyncio.timeout(30):  # until it waits for the place
                        await places.asked_by(1 + n)
                assert places.waiting() == {"free": 3, "paid": 2}
            return [r.status_code for r in await asyncio.gather(*pending)]

    assert asyncio.run(scenario()) == [202] * 5
    events = with_store(config, lambda store: store.read_range())
    accepted = [s.event.user_id for s in events if isinstance(s.event, TaskSubmitted)]
    assert accepted == ["vip", "s-paid", "s-free-1", "ann", "s-free-2"]
