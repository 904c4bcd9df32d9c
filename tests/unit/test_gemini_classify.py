"""classify() sorts every failure of the Gemini API and the network, never quoting a key; so does _image()."""

from __future__ import annotations

import pickle
import types as pytypes
from typing import Any

import aiohttp
import httpx
import pytest
from google.genai import errors, types
from hypothesis import given
from hypothesis import strategies as st

from actors.providers.base import Failure, ProviderError
from actors.providers.gemini import _image, classify, sniff_mime

RPC = "type.googleapis.com/google.rpc."
KEY = "test-key-D3adB33fD3adB33fD3adB33fD3adB33f0"


def body(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    """A google.rpc.Status body as the API sends it."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


def quota_429(quota_id: str, value: str, delay: str | None = "41s") -> errors.ClientError:
    """A 429 like the reference's, with one QuotaFailure violation and maybe a RetryInfo."""
    details: list[dict[str, Any]] = [
        {
            "@type": RPC + "QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini-3.1-flash-image"},
                    "quotaValue": value,
                }
            ],
        },
        {"@type": RPC + "Help", "links": [{"description": "quotas", "url": "https://ai.google.dev"}]},
    ]
    if delay is not None:
        details.append({"@type": RPC + "RetryInfo", "retryDelay": delay})
    message = f"You exceeded your current quota ... Please retry in {delay}."
    return errors.ClientError(429, body(429, "RESOURCE_EXHAUSTED", message, *details))


def error_info(reason: str) -> dict[str, Any]:
    """An ErrorInfo detail."""
    return {"@type": RPC + "ErrorInfo", "reason": reason, "domain": "googleapis.com"}


def test_a_per_minute_429_throttles_with_upstreams_own_wait() -> None:
    """quotaId PerMinute, RetryInfo 41s: THROTTLED, retry_after 41, the quota named and valued."""
    err = classify(quota_429("GenerateRequestsPerMinutePerProjectPerModel", "10", "41s"))
    assert err.failure is Failure.THROTTLED and not err.retryable
    assert (err.code, err.retry_after, err.quota_value) == (429, 41.0, 10)
    assert err.quota_id == "GenerateRequestsPerMinutePerProjectPerModel"
    assert "41" in err.reason and "GenerateRequestsPerMinutePerProjectPerModel" in err.reason


def test_a_fractional_retry_delay_is_kept() -> None:
    """retryDelay 53.016s becomes 53.016 seconds."""
    assert classify(
        quota_429("GenerateRequestsPerMinutePerProjectPerModel", "10", "53.016s")
    ).retry_after == (pytest.approx(53.016))


@given(st.floats(min_value=0, max_value=86_400, allow_nan=False))
def test_any_retry_delay_in_seconds_parses(seconds: float) -> None:
    """Whatever RetryInfo says in the `<n>s` form is what retry_after holds."""
    err = classify(quota_429("GenerateRequestsPerMinutePerProjectPerModel", "10", f"{seconds:.6f}s"))
    assert err.retry_after == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    "quota_id",
    ["GenerateRequestsPerDayPerProjectPerModel", "GenerateRequestsPerDayPerProjectPerModel-FreeTier"],
)
def test_a_per_day_429_parks_the_pool_until_midnight(quota_id: str) -> None:
    """A quotaId naming a day is QUOTA_DAY, whatever the RetryInfo says."""
    err = classify(quota_429(quota_id, "250", "60s"))
    assert err.failure is Failure.QUOTA_DAY
    assert (err.quota_id, err.quota_value) == (quota_id, 250)
    assert "midnight Pacific" in err.reason


def test_a_zero_quota_is_a_day_quota_because_waiting_cannot_help() -> None:
    """A free tier with quotaValue "0" has no quota at all: QUOTA_DAY, and the reason says so."""
    err = classify(quota_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "0", "30s"))
    assert err.failure is Failure.QUOTA_DAY
    assert err.quota_value == 0 and "waiting cannot help" in err.reason


def test_a_token_per_minute_429_throttles() -> None:
    """A per-minute token quota is throttling, like the request quota."""
    err = classify(quota_429("GenerateContentPaidTierInputTokensPerModelPerMinute", "1000000", "12s"))
    assert err.failure is Failure.THROTTLED and err.retry_after == 12.0


def test_a_bare_429_throttles_without_a_wait() -> None:
    """A 429 without details is THROTTLED with no retry_after and no quota."""
    exc = errors.ClientError(429, body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted."))
    err = classify(exc)
    assert err.failure is Failure.THROTTLED
    assert (err.retry_after, err.quota_id, err.quota_value) == (None, "", None)


def test_a_429_without_retry_info_has_no_wait() -> None:
    """QuotaFailure without RetryInfo: the quota is named, retry_after stays None."""
    err = classify(quota_429("GenerateRequestsPerMinutePerProjectPerModel", "10", None))
    assert err.failure is Failure.THROTTLED and err.retry_after is None and err.quota_value == 10


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (
            errors.ClientError(
                400,
                body(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    error_info("API_KEY_INVALID"),
                ),
            ),
            400,
        ),
        (errors.ClientError(401, body(401, "UNAUTHENTICATED", "Request had invalid credentials.")), 401),
        (
            errors.ClientError(
                403,
                body(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission denied: Consumer 'api_key:{KEY}' has been suspended.",
                    error_info("CONSUMER_SUSPENDED"),
                ),
            ),
            403,
        ),
    ],
)
def test_a_rejected_key_is_key_rejected_and_never_quoted(exc: errors.ClientError, code: int) -> None:
    """400 API_KEY_INVALID, 401 and 403 disable the key; the reason leaves the key out."""
    err = classify(exc)
    assert err.failure is Failure.KEY_REJECTED and err.code == code
    assert KEY not in err.reason and "api_key:" not in err.reason


def test_a_404_names_the_model_that_is_gone() -> None:
    """404 NOT_FOUND is MODEL_GONE, and the reason names the model id."""
    message = "models/gemini-2.5-flash-image is not found for API version v1, or is not supported."
    err = classify(errors.ClientError(404, body(404, "NOT_FOUND", message)), "gemini-2.5-flash-image")
    assert err.failure is Failure.MODEL_GONE and err.code == 404
    assert "gemini-2.5-flash-image" in err.reason


def test_a_404_without_a_model_in_its_message_names_the_configured_one() -> None:
    """When upstream's message names no model, the configured id is used."""
    err = classify(errors.ClientError(404, body(404, "NOT_FOUND", "Not found.")), "gemini-3-pro-image")
    assert err.failure is Failure.MODEL_GONE and "gemini-3-pro-image" in err.reason


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        (500, "INTERNAL", "An internal error has occurred."),
        (504, "DEADLINE_EXCEEDED", "Deadline exceeded."),
    ],
)
def test_server_errors_are_transient(code: int, status: str, message: str) -> None:
    """5xx is TRANSIENT with its status code and message."""
    err = classify(errors.ServerError(code, body(code, status, message)))
    assert err.failure is Failure.TRANSIENT and err.retryable and err.code == code
    assert message[:20] in err.reason


def test_a_408_is_transient() -> None:
    """A request timeout from upstream is worth another attempt."""
    assert (
        classify(errors.ClientError(408, body(408, "DEADLINE_EXCEEDED", "slow"))).failure is Failure.TRANSIENT
    )


def test_another_400_is_permanent() -> None:
    """A 400 that is not about the key fails the task."""
    exc = errors.ClientError(400, body(400, "INVALID_ARGUMENT", "Unable to process input image."))
    err = classify(exc)
    assert err.failure is Failure.PERMANENT and not err.retryable and err.code == 400
    assert "Unable to process input image" in err.reason


def test_a_long_message_is_cut_short() -> None:
    """Reasons stay short whatever upstream writes."""
    err = classify(errors.ClientError(400, body(400, "INVALID_ARGUMENT", "x" * 5000)))
    assert len(err.reason) < 260


@pytest.mark.parametrize("exc", [TimeoutError(), TimeoutError(), httpx.ReadTimeout("read timed out")])
def test_timeouts_are_transient(exc: BaseException) -> None:
    """A timeout is TRANSIENT with no HTTP code."""
    err = classify(exc)
    assert err.failure is Failure.TRANSIENT and err.code == 0 and "timed out" in err.reason


def _refused() -> aiohttp.ClientConnectorError:
    key = pytypes.SimpleNamespace(host="127.0.0.1", port=9, ssl=None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connect call failed"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        _refused(),
        httpx.ConnectError("connection refused"),
        ConnectionResetError(104, "reset"),
        OSError("down"),
    ],
)
def test_connection_errors_are_transient(exc: BaseException) -> None:
    """Refused, reset or unreachable: TRANSIENT with no HTTP code."""
    err = classify(exc)
    assert err.failure is Failure.TRANSIENT and err.code == 0 and "cannot reach upstream" in err.reason


@pytest.mark.parametrize(
    "exc",
    [
        quota_429("GenerateRequestsPerMinutePerProjectPerModel", "10", "53.016s"),
        quota_429("GenerateRequestsPerDayPerProjectPerModel", "250"),
        errors.ServerError(503, body(503, "UNAVAILABLE", "overloaded")),
        TimeoutError(),
    ],
)
def test_provider_errors_pickle_round_trip(exc: BaseException) -> None:
    """Every field survives pickling, as it must to cross Ray."""
    err = classify(exc)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ProviderError)
    fields = ("reason", "failure", "code", "retry_after", "quota_id", "quota_value", "retryable")
    assert [getattr(back, f) for f in fields] == [getattr(err, f) for f in fields]
    assert str(back) == str(err)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a", None),
    ],
)
def test_input_mime_types_are_sniffed_from_bytes(data: bytes, mime: str | None) -> None:
    """PNG, JPEG and WebP are told apart by their magic numbers; anything else is None."""
    assert sniff_mime(data) == mime


def _response(**fields: Any) -> types.GenerateContentResponse:
    return types.GenerateContentResponse.model_validate(fields)


def test_the_final_image_wins_over_thought_drafts_whatever_its_mime_type() -> None:
    """A draft marked `thought` comes first; the last final image is returned with its own mime type."""
    parts = [
        {"inline_data": {"data": b"draft", "mime_type": "image/png"}, "thought": True},
        {"text": "here it is"},
        {"inline_data": {"data": b"\xff\xd8\xff final", "mime_type": "image/jpeg"}},
    ]
    result = _image(
        _response(candidates=[{"content": {"role": "model", "parts": parts}, "finish_reason": "STOP"}])
    )
    assert (result.data, result.mime_type) == (b"\xff\xd8\xff final", "image/jpeg")


def test_an_answer_without_an_image_is_permanent_and_says_why() -> None:
    """Only text: PERMANENT, naming finishReason and a short snippet of the text."""
    parts = [{"text": "I cannot help with that. " * 40}]
    with pytest.raises(ProviderError) as info:
        _image(
            _response(candidates=[{"content": {"role": "model", "parts": parts}, "finish_reason": "STOP"}])
        )
    err = info.value
    assert err.failure is Failure.PERMANENT and "finishReason STOP" in err.reason
    assert "I cannot help with that." in err.reason and len(err.reason) < 300


def test_a_blocked_prompt_is_permanent_and_names_the_block() -> None:
    """No candidates and a block reason: PERMANENT, and the block reason is in the message."""
    with pytest.raises(ProviderError) as info:
        _image(_response(prompt_feedback={"block_reason": "SAFETY"}))
    assert info.value.failure is Failure.PERMANENT and "SAFETY" in info.value.reason
