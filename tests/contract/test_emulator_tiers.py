"""Service tiers over the wire: google-genai, through GeminiProvider, asks the emulator for a
tier in the request and reads the tier that served it from the `x-gemini-service-tier` header."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from actors.config import ProviderConfig, Secret
from actors.providers import images
from actors.providers.base import Failure, ImageRequest, ImageResult, ProviderError
from actors.providers.gemini import GeminiProvider
from emulator.server import running
from emulator.tiers import TIER_HEADER
from emulator.wire import EmulatorConfig, PoolSpec, TierLimits

KEY = "test-key-TierKey000000000000000000000001"
PREVIEW = "gemini-3-pro-image-preview"
REQUEST = ImageRequest(
    task_id="t", kind="photography", prompt="warm", images={"person": images.sample_selfie(3)}
)
# One project, 1 s windows: standard 6, priority 2, flex 3 for the default model; the
# preview model 1 call a window at standard, none at priority.
PROJECT = PoolSpec(
    "proj", 360, (KEY,), priority_rpm=120, flex_rpm=180, models=((PREVIEW, TierLimits(60, 0, 0)),)
)
Outcome = ImageResult | ProviderError


def calls(url: str, tiers: list[str], model: str = "gemini-3.1-flash-image") -> list[tuple[Outcome, float]]:
    """One call per tier in `tiers`, all at once through one provider: each outcome and its duration."""
    provider = GeminiProvider(
        ProviderConfig(name="gemini", base_url=url, model=model, timeout_seconds=10.0, image_size="512")
    )
    provider.prepare([Secret(KEY)])

    async def one(tier: str) -> tuple[Outcome, float]:
        t0 = time.monotonic()
        try:
            result: Outcome = await provider.generate(REQUEST, Secret(KEY), tier=tier)
        except ProviderError as exc:
            result = exc
        return result, time.monotonic() - t0

    async def main() -> list[tuple[Outcome, float]]:
        try:
            return list(await asyncio.gather(*(one(t) for t in tiers)))
        finally:
            await provider.aclose()

    return asyncio.run(main())


def emulator(**options: Any) -> EmulatorConfig:
    """The project above, answering in 10 ms."""
    return EmulatorConfig(pools=(PROJECT,), window_seconds=1.0, latency=0.01, jitter=0.0, seed=2, **options)


def test_a_priority_burst_over_its_limit_is_served_at_standard_without_an_error() -> None:
    """Four priority calls at once: two served at priority, two at standard (downgraded), all
    with images, each answer naming its tier; the emulator counts the downgrades."""
    with running(emulator()) as url:
        outcomes = calls(url, ["priority"] * 4)
        stats = httpx.get(f"{url}/stats").json()["projects"]["proj"]
    results = [r for r, _ in outcomes]
    assert all(isinstance(r, ImageResult) and r.data for r in results), results
    tiers = sorted(r.service_tier for r in results if isinstance(r, ImageResult))
    assert tiers == ["priority", "priority", "standard", "standard"]
    assert (stats["downgraded"], stats["served_priority"], stats["served_standard"]) == (2, 2, 2)
    assert (stats["throttled"], stats["max_window_calls"], stats["max_priority_window_calls"]) == (0, 4, 2)


def test_standard_and_flex_are_served_as_asked_and_flex_answers_later() -> None:
    """A standard call says standard; a flex call says flex and takes the flex latency more."""
    with running(emulator(flex_latency=0.4)) as url:
        (standard, _), (flex, flex_took) = calls(url, ["standard", "flex"])
    assert isinstance(standard, ImageResult) and standard.service_tier == "standard"
    assert isinstance(flex, ImageResult) and flex.service_tier == "flex"
    assert flex_took >= 0.4


def test_every_answer_carries_the_tier_header() -> None:
    """Errors too: an unknown model's 404, a 429 and an unknown tier's 400 all name a tier."""
    with running(emulator()) as url:
        body = {"contents": [{"parts": [{"text": "x"}]}], "serviceTier": "priority"}
        headers = {"x-goog-api-key": KEY}
        gone = httpx.post(f"{url}/v1beta/models/retired-model:generateContent", json=body, headers=headers)
        answers = [
            httpx.post(f"{url}/v1beta/models/{PREVIEW}:generateContent", json=body, headers=headers)
            for _ in range(2)
        ]
        bad = httpx.post(
            f"{url}/v1beta/models/{PREVIEW}:generateContent",
            json={**body, "serviceTier": "gold"},
            headers=headers,
        )
    assert gone.status_code == 404 and gone.headers[TIER_HEADER] == "standard"
    assert [a.status_code for a in answers] == [200, 429]
    assert [a.headers[TIER_HEADER] for a in answers] == ["standard", "standard"]
    assert bad.status_code == 400 and "gold" in bad.json()["error"]["message"] and TIER_HEADER in bad.headers


def test_the_second_model_has_limits_of_its_own() -> None:
    """The preview model allows one call a window for this project: its second call is a 429
    naming its limit, while the default model's window, untouched by it, still serves."""
    with running(emulator()) as url:
        preview = calls(url, ["standard", "standard"], model=PREVIEW)
        default = calls(url, ["standard"] * 6)
        stats = httpx.get(f"{url}/stats").json()["projects"]["proj"]["models"]
    refused = [r for r, _ in preview if isinstance(r, ProviderError)]
    assert len(refused) == 1 and refused[0].failure is Failure.THROTTLED and refused[0].quota_value == 60
    assert all(isinstance(r, ImageResult) for r, _ in default)
    assert (stats[PREVIEW]["max_window_calls"], stats[PREVIEW]["capacity"]) == (1, 1)
    assert stats["gemini-3.1-flash-image"]["max_window_calls"] == 6
