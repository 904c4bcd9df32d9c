"""The real google-genai client, through GeminiProvider, against the emulator: every outcome class."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from actors.config import ProviderConfig, Secret
from actors.providers import images
from actors.providers.base import Failure, ImageRequest, ImageResult, ProviderError
from actors.providers.gemini import GeminiProvider
from emulator.server import running
from emulator.wire import PER_DAY, PER_MINUTE, EmulatorConfig, parse_pool
from tests.conftest import free_port

KEY = "test-key-EmulatorKeyOne000000000000000001"
KEYS = (
    "test-key-EmulatorKeyA00000000000000000aaaa",
    "test-key-EmulatorKeyB00000000000000000bbbb",
    "test-key-EmulatorKeyC0000000000000000cccc",
)
MODEL = "gemini-3.1-flash-image"
SELFIE = images.sample_selfie(7)
GARMENT = images.sample_garment(7)
Outcome = ImageResult | ProviderError


def config(**overrides: Any) -> EmulatorConfig:
    """One project of 600 rpm over a 1 s window (10 calls), answering at once."""
    base = EmulatorConfig(
        pools=(parse_pool(f"p:600:{KEY}"),), window_seconds=1.0, latency=0.0, jitter=0.0, seed=1
    )
    return replace(base, **overrides)


@contextmanager
def emulator(**overrides: Any) -> Iterator[str]:
    """A running emulator's base URL."""
    with running(config(**overrides)) as url:
        yield url


def photo(n: int = 0) -> ImageRequest:
    """A photography request."""
    return ImageRequest(task_id=f"t{n}", kind="photography", prompt="warm film", images={"person": SELFIE})


def generate(url: str, keys: tuple[str, ...] = (KEY,), calls: int = 1, **provider: Any) -> list[Outcome]:
    """Make `calls` concurrent calls through one GeminiProvider, keys taken in turn; results in order."""
    settings: dict[str, Any] = {
        "name": "gemini",
        "base_url": url,
        "model": MODEL,
        "timeout_seconds": 10.0,
        "image_size": "512",
    }
    gp = GeminiProvider(ProviderConfig(**(settings | provider)))

    async def one(i: int) -> Outcome:
        key = keys[i % len(keys)]
        try:
            return await gp.generate(photo(i), Secret(key))
        except ProviderError as exc:
            assert key not in exc.reason and key not in repr(exc)
            return exc

    async def main() -> list[Outcome]:
        try:
            return list(await asyncio.gather(*(one(i) for i in range(calls))))
        finally:
            await gp.aclose()

    return asyncio.run(main())


def failure(outcome: Outcome) -> ProviderError:
    """The outcome as a ProviderError, or a test failure if it was an image."""
    assert isinstance(outcome, ProviderError), f"expected a failure, got {outcome!r}"
    return outcome


def stats(url: str) -> dict[str, Any]:
    """The emulator's /stats."""
    answer: dict[str, Any] = httpx.get(f"{url}/stats").json()
    return answer


def test_success_is_a_real_png() -> None:
    """Photography and fitting both come back as PNG bytes Pillow decodes."""
    with emulator() as url:
        [result] = generate(url)
        gp = GeminiProvider(ProviderConfig(name="gemini", base_url=url, model=MODEL))
        fitting = ImageRequest("f", "fitting", "slim fit", {"person": SELFIE, "garment": GARMENT})

        async def fit() -> ImageResult:
            try:
                return await gp.generate(fitting, Secret(KEY))
            finally:
                await gp.aclose()

        fitted = asyncio.run(fit())
    for image in (result, fitted):
        assert isinstance(image, ImageResult) and image.mime_type == "image/png"
        with Image.open(io.BytesIO(image.data)) as im:
            assert im.format == "PNG" and im.size[0] > 0


def test_one_call_over_capacity_is_throttled_with_upstreams_wait() -> None:
    """Capacity 10 per 2 s window: of 11 calls, exactly one is THROTTLED, retry_after in (0, 2]."""
    with emulator(pools=(parse_pool(f"p:300:{KEY}"),), window_seconds=2.0) as url:
        outcomes = generate(url, calls=11)
    refused = [o for o in outcomes if isinstance(o, ProviderError)]
    assert len(refused) == 1 and sum(isinstance(o, ImageResult) for o in outcomes) == 10
    err = refused[0]
    assert (err.failure, err.code, err.quota_id, err.quota_value) == (Failure.THROTTLED, 429, PER_MINUTE, 300)
    assert err.retry_after is not None and 0 < err.retry_after <= 2.0


@pytest.mark.parametrize("overrides", [{"pools": (parse_pool(f"p:600:{KEY}:2"),)}, {"rpd": 2}])
def test_the_third_call_of_the_day_hits_the_day_quota(overrides: dict[str, Any]) -> None:
    """rpd 2 (in the spec or emulator-wide): the third call is QUOTA_DAY, waiting until midnight Pacific."""
    with emulator(**overrides) as url:
        first, second = generate(url, calls=2)
        [third] = generate(url)
    assert isinstance(first, ImageResult) and isinstance(second, ImageResult)
    err = failure(third)
    assert (err.failure, err.quota_id, err.quota_value) == (Failure.QUOTA_DAY, PER_DAY, 2)
    assert err.retry_after is not None and 0 < err.retry_after <= 25 * 3600


def test_an_unknown_key_is_rejected() -> None:
    """A key in no project: 400 API_KEY_INVALID, KEY_REJECTED."""
    with emulator() as url:
        [outcome] = generate(url, keys=("test-key-NobodysKey000000000000000000000000",))
    err = failure(outcome)
    assert (err.failure, err.code) == (Failure.KEY_REJECTED, 400) and "API_KEY_INVALID" in err.reason


def test_a_revoked_key_is_rejected() -> None:
    """A revoked key: 403 PERMISSION_DENIED, KEY_REJECTED."""
    with emulator(revoked=(KEY,)) as url:
        [outcome] = generate(url)
        counted = stats(url)["keys"]
    err = failure(outcome)
    assert (err.failure, err.code) == (Failure.KEY_REJECTED, 403)
    assert next(iter(counted.values()))["errors"] == 1


def test_an_unknown_model_is_gone_and_the_sdk_speaks_v1() -> None:
    """A retired model id: 404 on /v1 (the SDK's default version), MODEL_GONE naming the model."""
    with emulator() as url:
        [outcome] = generate(url, model="gemini-2.5-flash-image")
        client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=url))

        async def raw_sdk() -> errors.APIError:
            try:
                await client.aio.models.generate_content(model="gemini-2.5-flash-image", contents="hi")
            except errors.APIError as exc:
                return exc
            finally:
                await client.aio.aclose()
            raise AssertionError("expected a 404")

        sdk_error = asyncio.run(raw_sdk())
    err = failure(outcome)
    assert (err.failure, err.code) == (Failure.MODEL_GONE, 404) and "gemini-2.5-flash-image" in err.reason
    assert "for API version v1," in str(sdk_error.message)


def test_v1beta_works_too() -> None:
    """A client pinned to v1beta reaches the same emulator."""
    with emulator() as url:
        client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=url, api_version="v1beta"))

        async def call() -> types.GenerateContentResponse:
            try:
                parts = [
                    types.Part.from_bytes(data=SELFIE, mime_type="image/png"),
                    types.Part(text="portrait"),
                ]
                content = types.Content(role="user", parts=parts)
                return await client.aio.models.generate_content(model=MODEL, contents=content)
            finally:
                await client.aio.aclose()

        response = asyncio.run(call())
    assert response.parts and response.parts[0].inline_data and response.parts[0].inline_data.data


def test_an_overloaded_model_is_transient() -> None:
    """error-rate 1.0: 503 UNAVAILABLE, TRANSIENT with code 503."""
    with emulator(error_rate=1.0) as url:
        [outcome] = generate(url)
    err = failure(outcome)
    assert (err.failure, err.code) == (Failure.TRANSIENT, 503) and "overloaded" in err.reason


def test_an_answer_without_an_image_is_permanent() -> None:
    """empty-rate 1.0: a 200 holding only text is PERMANENT, and the reason quotes it."""
    with emulator(empty_rate=1.0) as url:
        [outcome] = generate(url)
    err = failure(outcome)
    assert err.failure is Failure.PERMANENT and "finishReason STOP" in err.reason
    assert "could not make an image" in err.reason


def test_a_slow_answer_times_out_as_transient() -> None:
    """latency 2 s against a 0.3 s timeout: TRANSIENT with no code, well before the latency."""
    with emulator(latency=2.0) as url:
        started = time.monotonic()
        [outcome] = generate(url, timeout_seconds=0.3)
        elapsed = time.monotonic() - started
    err = failure(outcome)
    assert (err.failure, err.code) == (Failure.TRANSIENT, 0) and "timed out" in err.reason
    assert elapsed < 1.5


def test_a_refused_connection_is_transient() -> None:
    """Nothing listens on the port: TRANSIENT at once, no hidden SDK retry."""
    started = time.monotonic()
    [outcome] = generate(f"http://127.0.0.1:{free_port()}")
    err = failure(outcome)
    assert (err.failure, err.code) == (Failure.TRANSIENT, 0) and "cannot reach upstream" in err.reason
    assert time.monotonic() - started < 1.0


def test_keys_of_one_project_share_its_budget() -> None:
    """15 calls over 3 keys of one project with capacity 10: 10 images and 5 throttled, not 15 images."""
    with emulator(pools=(parse_pool(f"shared:300:{','.join(KEYS)}"),), window_seconds=2.0) as url:
        outcomes = generate(url, keys=KEYS, calls=15)
        figures = stats(url)
    assert sum(isinstance(o, ImageResult) for o in outcomes) == 10
    assert sum(isinstance(o, ProviderError) and o.failure is Failure.THROTTLED for o in outcomes) == 5
    project = figures["projects"]["shared"]
    assert (project["accepted"], project["throttled"], project["max_window_calls"]) == (10, 5, 10)
    assert [k["calls"] for k in figures["keys"].values()] == [5, 5, 5]


def test_stats_match_what_was_sent_and_reset() -> None:
    """Per-key and per-project counts, peak concurrency, no key in the body; reset zeroes them."""
    pools = (parse_pool(f"a:600:{KEYS[0]},{KEYS[1]}"), parse_pool(f"b:60:{KEYS[2]}"))
    with emulator(pools=pools, latency=0.5) as url:
        generate(url, keys=KEYS[:2], calls=4)  # 4 concurrent calls in flight together on project a
        generate(url, keys=(KEYS[2],), calls=2)  # project b has capacity 1: one image, one 429
        generate(url, keys=("test-key-NobodysKey000000000000000000000000",))
        text = httpx.get(f"{url}/stats").text
        figures = json.loads(text)
        reset = httpx.post(f"{url}/stats/reset").json()
    assert not any(key in text for key in KEYS)
    assert figures["keys"] == {
        "a#1\u2026aaaa": {"project": "a", "calls": 2, "ok": 2, "throttled": 0, "errors": 0},
        "a#2\u2026bbbb": {"project": "a", "calls": 2, "ok": 2, "throttled": 0, "errors": 0},
        "b#1\u2026cccc": {"project": "b", "calls": 2, "ok": 1, "throttled": 1, "errors": 0},
    }
    a, b = figures["projects"]["a"], figures["projects"]["b"]
    assert (a["accepted"], a["throttled"], a["peak_concurrency"], a["max_window_calls"]) == (4, 0, 4, 4)
    assert (b["accepted"], b["throttled"], b["max_window_calls"], b["capacity"]) == (1, 1, 1, 1)
    assert figures["unknown_key_calls"] == 1 and figures["peak_concurrency"] == 4
    assert figures["in_flight"] == 0
    assert all(v == {**v, "calls": 0, "ok": 0, "throttled": 0, "errors": 0} for v in reset["keys"].values())
    assert reset["projects"]["a"]["accepted"] == 0 and reset["peak_concurrency"] == 0


def _body(data: str, mime_field: str) -> dict[str, Any]:
    part = {"inlineData": {"data": data, mime_field: "image/png"}}
    return {"contents": [{"role": "user", "parts": [part, {"text": "portrait"}]}]}


def test_raw_wire_format_success_and_429() -> None:
    """Over plain HTTP: both base64 alphabets and mime spellings pass; the 429 is the documented body."""
    with emulator(pools=(parse_pool(f"p:120:{KEY}"),)) as url, httpx.Client(base_url=url) as http:
        headers = {"x-goog-api-key": KEY}
        path = f"/v1beta/models/{MODEL}:generateContent"
        ok = http.post(
            path, headers=headers, json=_body(base64.urlsafe_b64encode(SELFIE).decode(), "mime_type")
        )
        ok2 = http.post(path, headers=headers, json=_body(base64.b64encode(SELFIE).decode(), "mimeType"))
        refused = http.post(path, headers=headers, json=_body(base64.b64encode(SELFIE).decode(), "mimeType"))
        broken = http.post(path, headers=headers, content=b"{nope")
    assert (ok.status_code, ok2.status_code) == (200, 200)
    candidate = ok.json()["candidates"][0]
    blob = candidate["content"]["parts"][0]["inlineData"]
    assert candidate["finishReason"] == "STOP" and blob["mimeType"] == "image/png"
    assert base64.b64decode(blob["data"], validate=True).startswith(b"\x89PNG")
    assert ok.json()["usageMetadata"]["totalTokenCount"] > 0

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert re.search(r"Please retry in \d+\.\d{3}s\.$", error["message"])
    quota, help_, retry = error["details"]
    assert quota["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"
    assert quota["violations"] == [
        {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
            "quotaDimensions": {"location": "global", "model": MODEL},
            "quotaValue": "120",
        }
    ]
    assert help_["@type"] == "type.googleapis.com/google.rpc.Help"
    assert retry["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    delay = re.fullmatch(r"(\d+(?:\.\d+)?)s", retry["retryDelay"])
    assert delay and 0 < float(delay.group(1)) <= 1.0

    assert broken.status_code == 400
    assert broken.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_on_sent_is_told_once_when_the_request_leaves_and_not_when_it_never_does() -> None:
    """The send time comes from the HTTP client's own trace, between the call's start and its
    answer (0.3 s of upstream latency later); a refused connection reports nothing."""
    sent: list[float] = []
    with emulator(latency=0.3) as url:
        gp = GeminiProvider(ProviderConfig(name="gemini", base_url=url, model=MODEL, image_size="512"))

        async def call() -> tuple[float, float]:
            try:
                started = time.time()
                await gp.generate(photo(), Secret(KEY), sent.append)
                return started, time.time()
            finally:
                await gp.aclose()

        started, answered = asyncio.run(call())
    assert len(sent) == 1 and started <= sent[0] <= answered - 0.25
    closed = GeminiProvider(ProviderConfig(name="gemini", base_url=f"http://127.0.0.1:{free_port()}"))

    async def refused() -> None:
        try:
            await closed.generate(photo(), Secret(KEY), sent.append)
        finally:
            await closed.aclose()

    with pytest.raises(ProviderError):
        asyncio.run(refused())
    assert len(sent) == 1


def test_a_call_granted_ahead_waits_built_until_its_place_is_free() -> None:
    """With `not_before`, the request is built at once but goes out at that time: the send
    time the HTTP client's trace reports is at or just after it, and upstream answers after."""
    sent: list[float] = []
    with emulator() as url:
        gp = GeminiProvider(ProviderConfig(name="gemini", base_url=url, model=MODEL, image_size="512"))

        async def call() -> tuple[float, float, float]:
            try:
                await gp.start()
                called = time.time()
                not_before = called + 0.5
                await gp.generate(photo(), Secret(KEY), sent.append, not_before)
                return called, not_before, time.time()
            finally:
                await gp.aclose()

        called, not_before, answered = asyncio.run(call())
        accepted = stats(url)["projects"]["p"]["accepted"]
    assert len(sent) == 1 and accepted == 1
    assert not_before <= sent[0] < not_before + 0.25, (sent[0] - called, not_before - called)
    assert answered >= sent[0]
