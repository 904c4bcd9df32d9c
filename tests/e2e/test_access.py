"""Credits, tokens, fairness and cancellation end to end: Ray Serve with two replicas, actors,
embedded Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from actors.config import CreditsConfig
from events.catalogue import CreditsGranted
from serve_app.cli.burst import payload
from serve_app.http.auth import new_token
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.helpers import append_to, eventually, log_of, make_config

SLOTS = 4
PER_USER = 3


def token(live: Running, user: str, role: str) -> dict[str, str]:
    """Authorization headers of a new token."""
    secret, event = new_token(user, role)
    append_to(live.config, [event])
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def live(ray_session: None, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Tokens required, credits on, a per-user running cap, two ingress replicas."""
    base = make_config(
        store_url,
        str(tmp_path_factory.mktemp("access")),
        slots=SLOTS,
        latency=0.2,
        pools=(("p1", 600, 1.0),),
        port=free_port(),
        auth=True,
        credits=CreditsConfig(photography=1, fitting=2),
        per_user_running=PER_USER,
        per_user_waiting=1000,
    )
    config = replace(base, server=replace(base.server, replicas=2))
    with running(config, dashboard=False) as r:
        yield r


def body(user: str | None, kind: str = "photography") -> dict[str, Any]:
    b = payload(0, kind)
    if user is None:
        del b["user_id"]
    else:
        b["user_id"] = user
    return b


def test_tokens_roles_and_ownership(live: Running) -> None:
    """401 without a valid token; a user sees and cancels only its own tasks (others are 404);
    only an admin reaches the ops endpoints and grants credits."""
    alice, bob = token(live, "alice", "user"), token(live, "bob", "user")
    admin = token(live, "root", "admin")
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        assert (
            client.post("/v1/admin/credits", json={"user_id": "alice", "amount": 5}, headers=admin).json()[
                "balance"
            ]
            == 5
        )
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YTpi"}):
            r = client.get("/v1/me", headers=headers)
            assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
            assert r.headers["www-authenticate"].startswith("Bearer")
        submitted = client.post("/v1/tasks", json=body(None), headers=alice)
        assert submitted.status_code == 202, submitted.text
        task = submitted.json()["task_id"]
        assert submitted.json()["balance"] == 4
        assert client.post("/v1/tasks", json=body("bob"), headers=alice).status_code == 403
        assert client.get(f"/v1/tasks/{task}", headers=alice).json()["user_id"] == "alice"
        for path in (f"/v1/tasks/{task}", f"/v1/tasks/{task}/events", f"/v1/tasks/{task}/watch"):
            r = client.get(path, headers=bob)
            assert r.status_code == 404 and r.json()["status"] == 404
        assert client.delete(f"/v1/tasks/{task}", headers=bob).status_code == 404
        assert client.get("/v1/queue", headers=alice).status_code == 403
        assert client.get("/metrics", headers=alice).status_code == 403
        assert (
            client.post("/v1/admin/credits", json={"user_id": "x", "amount": 1}, headers=alice).status_code
            == 403
        )
        assert client.get("/v1/queue", headers=admin).status_code == 200
        me = client.get("/v1/me", headers=alice).json()
        assert me["user_id"] == "alice" and me["charged"] == 1
        assert [e["type"] for e in me["ledger"][:2]] == ["credits.charged", "credits.granted"]


def test_fifty_concurrent_submits_pay_for_exactly_ten_across_two_replicas(live: Running) -> None:
    """A balance of 10, 50 submits at once via both replicas: 10 accepted, 40 get 402, balance 0."""
    service = token(live, "app-backend", "service")
    for round_ in range(3):
        user = f"payer-{round_}"
        append_to(live.config, [CreditsGranted(user_id=user, amount=10, by="test", at=0.0)])

        async def burst(user: str = user) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=live.api_url, timeout=60) as client:
                return await asyncio.gather(
                    *(client.post("/v1/tasks", json=body(user), headers=service) for _ in range(50))
                )

        codes = [r.status_code for r in asyncio.run(burst())]
        assert codes.count(202) == 10 and codes.count(402) == 40, codes
        with httpx.Client(base_url=live.api_url, timeout=30) as client:
            refused = client.post("/v1/tasks", json=body(user), headers=service)
            problem = refused.json()
            assert problem["balance"] == 0 and problem["price"] == 1 and problem["status"] == 402
            assert client.get("/v1/me", params={"user_id": user}, headers=service).json()["balance"] == 0


def test_users_take_turns_and_a_cancelled_task_is_refunded(live: Running) -> None:
    """A heavy user's 40 tasks delay a light user's one by at most a turn; a queued task is
    cancelled with a refund, a second cancel is a 409; no user ever runs more than the cap."""
    admin = token(live, "ops", "admin")
    service = token(live, "app", "service")
    append_to(
        live.config,
        [CreditsGranted(user_id=u, amount=100, by="test", at=0.0) for u in ("heavy", "light")],
    )

    async def submit_all(user: str, n: int) -> list[str]:
        async with httpx.AsyncClient(base_url=live.api_url, timeout=60) as client:
            out = []
            for _ in range(n):  # one after another: the heavy user's tasks are in the queue first
                r = await client.post("/v1/tasks", json=body(user), headers=service)
                assert r.status_code == 202, r.text
                out.append(r.json()["task_id"])
            return out

    heavy = asyncio.run(submit_all("heavy", 40))
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        light = client.post("/v1/tasks", json=body("light"), headers=service).json()
        assert light["position"] <= 2, light  # behind at most one task per other user
        # The heavy user's newest task waits a turn behind each of its others: still queued.
        before = client.get("/v1/me", params={"user_id": "heavy"}, headers=service).json()["balance"]
        doomed = client.post("/v1/tasks", json=body("heavy", "fitting"), headers=service).json()
        assert doomed["position"] > 10, doomed
        assert (
            client.get("/v1/me", params={"user_id": "heavy"}, headers=service).json()["balance"] == before - 2
        )
        cancelled = client.delete(f"/v1/tasks/{doomed['task_id']}", headers=service)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json() == {"task_id": doomed["task_id"], "status": "cancelled", "refunded": 2}
        again = client.delete(f"/v1/tasks/{doomed['task_id']}", headers=service)
        assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/me", params={"user_id": "heavy"}, headers=service).json()["balance"] == before

        def views() -> dict[str, dict[str, Any]] | None:
            found = {
                t: client.get(f"/v1/tasks/{t}", headers=admin).json() for t in [*heavy, light["task_id"]]
            }
            return found if all(v["status"] == "succeeded" for v in found.values()) else None

        done = eventually(views, timeout=120, interval=0.5, what="every task succeeded")
    waits = {t: v["dispatched_at"] - v["submitted_at"] for t, v in done.items()}
    light_wait, heavy_last = waits[light["task_id"]], waits[heavy[-1]]
    print(f"light user's wait {light_wait:.2f} s, heavy user's last wait {heavy_last:.2f} s")
    assert light_wait < heavy_last / 5
    heavy_running: set[str] = set()
    peak = 0
    for stored in log_of(live.config):
        e = stored.event
        if getattr(e, "task_id", None) not in heavy:
            continue
        if e.type == "task.dispatched":
            heavy_running.add(e.task_id)
        elif e.type in (
            "task.succeeded",
            "task.attempt_failed",
            "task.lease_expired",
            "task.upstream_throttled",
        ):
            heavy_running.discard(e.task_id)
        peak = max(peak, len(heavy_running))
    assert peak == PER_USER  # the heavy user filled its cap, never more
