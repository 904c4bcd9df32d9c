"""Refunds end to end: google-genai against the Gemini emulator, which answers some calls
without an image (a permanent failure); every failed task is refunded exactly once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from actors.audit import audit
from actors.config import CreditsConfig, PoolConfig, ProviderConfig, Secret
from emulator.server import running as emulator
from emulator.wire import EmulatorConfig, PoolSpec
from serve_app.cli.burst import payload
from serve_app.runtime import running
from tests.conftest import free_port
from tests.helpers import eventually, log_of, make_config


def test_refunds_match_failures_exactly_through_the_gemini_emulator(
    ray_session: None, store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """60 tasks, 30% of upstream answers without an image (a permanent failure): every failed
    task is refunded exactly once, no succeeded one is, and the audit agrees."""
    keys = ("test-key-refund-0000000001",)
    spec = PoolSpec("proj", 600, keys)
    with emulator(
        EmulatorConfig(pools=(spec,), window_seconds=1.0, latency=0.05, jitter=0.02, empty_rate=0.3, seed=5)
    ) as url:
        config = make_config(
            store_url,
            str(tmp_path_factory.mktemp("refunds")),
            slots=8,
            port=free_port(),
            credits=CreditsConfig(photography=1, fitting=2, default_grant=1000),
            provider=ProviderConfig(name="gemini", base_url=url, timeout_seconds=10, image_size="512"),
            pool_configs=(PoolConfig(name="proj", rpm=600, keys=(Secret(keys[0]),), window_seconds=1.0),),
        )
        with running(config, dashboard=False) as live:

            async def burst() -> list[str]:
                async with httpx.AsyncClient(base_url=live.api_url, timeout=60) as client:
                    rs = await asyncio.gather(
                        *(client.post("/v1/tasks", json=payload(i, "photography")) for i in range(60))
                    )
                assert {r.status_code for r in rs} == {202}
                return [r.json()["task_id"] for r in rs]

            ids = asyncio.run(burst())
            with httpx.Client(base_url=live.api_url, timeout=30) as client:

                def ended() -> bool:
                    q = client.get("/v1/queue").json()
                    return bool(q["succeeded"] + q["failed"] >= len(ids))

                eventually(ended, timeout=120, interval=0.25, what="every task ended")
            report = audit(log_of(live.config))
    failed = report.ended.get("failed", 0)
    print(f"refund run: {report.ended}, refunds {report.refunds}, credits {report.credits}")
    assert report.ok, (report.max_window_calls, report.window_capacity, report.overlapping)
    assert failed > 5 and report.refunds == failed
    assert report.credits["refunded"] == failed and report.credits["charged"] == len(ids)
