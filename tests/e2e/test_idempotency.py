"""Idempotent submits: a repeat returns the first task, a different request under the key is a 409."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from actors.config import CreditsConfig
from events.catalogue import CreditsGranted
from events.redis_store import RedisEventStore
from serve_app.http.app import create_app
from tests.helpers import append_to, make_config


def _body(prompt: str = "p", **extra: Any) -> dict[str, Any]:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    return {"kind": "photography", "prompt": prompt, "images": {"person": image}, **extra}


def test_repeats_return_the_first_task_and_conflicts_are_409(store_url: str, tmp_path: Path) -> None:
    """Same user, key and body give one task even when sent 20 times at once; another body is a 409."""
    config = make_config(store_url, str(tmp_path))
    app = create_app(config)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            first = await client.post("/v1/tasks", json=_body(idempotency_key="order-1", user_id="ann"))
            assert first.status_code == 202
            task = first.json()["task_id"]
            again = await client.post(
                "/v1/tasks", json=_body(user_id="ann"), headers={"Idempotency-Key": "order-1"}
            )
            assert again.status_code == 202 and again.json()["task_id"] == task
            assert again.headers["idempotent-replayed"] == "true"
            burst = await asyncio.gather(
                *(
                    client.post(
                        "/v1/tasks", json=_body(user_id="ann"), headers={"Idempotency-Key": "order-2"}
                    )
                    for _ in range(20)
                )
            )
            assert {r.status_code for r in burst} == {202}
            assert len({r.json()["task_id"] for r in burst}) == 1
            conflict = await client.post(
                "/v1/tasks", json=_body("other", idempotency_key="order-1", user_id="ann")
            )
            assert conflict.status_code == 409 and "order-1" in conflict.json()["detail"]
            other_user = await client.post("/v1/tasks", json=_body(idempotency_key="order-1", user_id="bob"))
            assert other_user.status_code == 202 and other_user.json()["task_id"] != task
            disagree = await client.post(
                "/v1/tasks", json=_body(idempotency_key="a", user_id="ann"), headers={"Idempotency-Key": "b"}
            )
            assert disagree.status_code == 400
            store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
            submitted = [s for s in await store.read_range() if s.event.type == "task.submitted"]
            await store.close()
            assert len(submitted) == 3

    asyncio.run(scenario())


def test_keys_of_different_users_never_meet(store_url: str, tmp_path: Path) -> None:
    """User "ua" with key "x:k1" gets a task of its own, charged, not that of user "ua:x" with key "k1"."""
    config = make_config(store_url, str(tmp_path), credits=CreditsConfig(default_grant=0))
    append_to(
        config, [CreditsGranted(user_id=u, amount=5, by="test", at=time.time()) for u in ("ua:x", "ua")]
    )
    app = create_app(config)

    async def scenario() -> tuple[httpx.Response, httpx.Response, list[str]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            first = await client.post("/v1/tasks", json=_body(user_id="ua:x", idempotency_key="k1"))
            second = await client.post("/v1/tasks", json=_body("other", user_id="ua", idempotency_key="x:k1"))
        store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
        balances = [(await store.user(user, entries=0))[0]["balance"] for user in ("ua:x", "ua")]
        await store.close()
        return first, second, balances

    first, second, balances = asyncio.run(scenario())
    assert first.status_code == second.status_code == 202, second.text
    assert first.json()["task_id"] != second.json()["task_id"]
    assert "idempotent-replayed" not in second.headers
    assert balances == ["4", "4"]
