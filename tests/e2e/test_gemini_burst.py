"""End to end with a real upstream wire: HTTP in, Ray actors, the google-genai client out to the
Gemini emulator, whose projects enforce their quotas over a sliding window."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from genqueue_client import AsyncClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from actors.config import PoolConfig, ProviderConfig, Secret
from emulator.server import running as emulator
from emulator.wire import EmulatorConfig, PoolSpec
from serve_app.cli.burst import payload
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.helpers import eventually, make_config

KEYS = {name: f"test-key-E2eKey-{name}-0000000000000000000" for name in ("a", "b", "c")}
TASKS = 90


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """Three projects at 600 RPM (10 calls per rolling second each), 0.1 s per call."""
    pools = tuple(PoolSpec(name, 600, (key,)) for name, key in KEYS.items())
    with emulator(EmulatorConfig(pools=pools, window_seconds=1.0, latency=0.1, jitter=0.05)) as url:
        yield url


@pytest.fixture(scope="module")
def live(
    ray_session: None, store_url: str, upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """genqueue on the gemini provider; pool c is configured at 1.5x what upstream allows."""
    rpm = {"a": 600, "b": 600, "c": 900}
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("gemini")),
        slots=12,
        max_attempts=1,
        port=free_port(),
        provider=ProviderConfig(name="gemini", base_url=upstream, timeout_seconds=10, image_size="512"),
        pool_configs=tuple(
            PoolConfig(name=n, rpm=rpm[n], keys=(Secret(k),), window_seconds=1.0) for n, k in KEYS.items()
        ),
    )
    config = replace(config, server=replace(config.server, port=free_port()))
    with running(config, dashboard=False) as r:
        yield r


class Refusals(httpx.AsyncHTTPTransport):
    """An HTTP transport that keeps the bodies of the 503s it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if response.status_code == 503:
            self.seen.append((await response.aread())[:300])
        return response


def test_a_burst_through_http_ends_with_images_and_never_overruns_a_project(
    live: Running, upstream: str
) -> None:
    """90 submits at once: all succeed (max_attempts 1, so no 429 was charged), no project saw more
    than its 10 calls in a rolling second, and the misconfigured pool learned upstream's rate."""

    refused = Refusals()

    async def burst() -> list[httpx.Response]:
        # genqueue's own client, as an app would send them: a 503 (a replica busy starting, a
        # store hiccup on a loaded machine) is tried again after its Retry-After, under the
        # same idempotency key, so it is never charged twice.
        async with AsyncClient(live.api_url, timeout=60, retries=3, transport=refused) as client:
            return await asyncio.gather(
                *(
                    client.request(
                        "POST",
                        "/v1/tasks",
                        body=payload(i, "fitting" if i % 2 else "photography"),
                        headers={"Idempotency-Key": f"burst-{i}"},
                    )
                    for i in range(TASKS)
                )
            )

    responses = asyncio.run(burst())
    print(f"503s tried again: {len(refused.seen)} {refused.seen[:3]}")
    assert [r.status_code for r in responses] == [202] * TASKS
    ids = [r.json()["task_id"] for r in responses]
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        eventually(
            lambda: client.get("/v1/queue").json()["succeeded"] >= TASKS,
            timeout=120,
            interval=0.25,
            what="burst done",
        )
        views = [client.get(f"/v1/tasks/{t}").json() for t in ids]
        assert {v["status"] for v in views} == {"succeeded"}
        image = client.get(views[0]["result_url"])
        assert Image.open(io.BytesIO(image.content)).format == "PNG"
        queue = client.get("/v1/queue").json()
        metrics = client.get("/metrics").text
    stats = httpx.get(f"{upstream}/stats", timeout=5).json()
    assert all(p["max_window_calls"] <= p["capacity"] == 10 for p in stats["projects"].values())
    pools = {p["name"]: p for p in queue["pools"]}
    assert pools["c"]["rpm"] == 900 and pools["c"]["learned_rpm"] <= 600
    assert stats["projects"]["c"]["throttled"] >= 1
    # Key ids only, never a key, in what operators see.
    for secret in KEYS.values():
        assert secret not in str(queue) and secret not in metrics
    calls = {
        (s.labels["pool"], s.labels["code"]): s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "genqueue_upstream_calls_total"
    }
    assert calls[("c", "429")] == stats["projects"]["c"]["throttled"]
    assert sum(v for (pool, code), v in calls.items() if code == "200") == TASKS
