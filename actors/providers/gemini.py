"""The gemini provider: google-genai's async client, one per key; `classify` sorts its failures.

The SDK makes exactly one attempt per call (the queue owns every retry and every wait), and
no reason built here ever holds a key.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import aiohttp
import httpx
from google import genai
from google.genai import errors, types

from actors.config import FLEX, PRIORITY, STANDARD, ProviderConfig, Secret
from actors.providers import images
from actors.providers.base import INPUT_ROLES, Failure, ImageRequest, ImageResult, ProviderError, hold_until

_PHOTOGRAPHY = (
    "Turn this selfie into a professional portrait photograph of the same person. Keep the face, "
    "identity and expression unchanged; change only the lighting, background and photographic style. "
    "Style: {prompt}"
)
_FITTING = (
    "The first image shows a person, the second a garment. Make a photorealistic image of the same "
    "person wearing this garment, keeping their face, body shape, pose and background unchanged and "
    "the garment's colour, pattern and cut faithful. {prompt}"
)
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
_SNIPPET = 200
# Real 403 messages quote the consumer ("api_key:AIza..."); strip anything key-like from text we keep.
_KEYLIKE = re.compile(r"AIza[0-9A-Za-z_\-]{10,}|api_key:[^\s'\"]+")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")
_MODEL = re.compile(r"models/([\w.\-]+)")
_RETRYABLE_STATUSES = {408}
# The response header that names the tier which served a call, and the tiers a request asks for.
TIER_HEADER = "x-gemini-service-tier"
_TIERS = {FLEX: types.ServiceTier.FLEX, PRIORITY: types.ServiceTier.PRIORITY}
_TIER_WORD = re.compile(r"[a-z][a-z_]{0,31}")
# Responses can carry several large images in one JSON body: read in big chunks, as the SDK does.
_READ_BUFFER = 2**22
# The call in progress in this task: told the time its request went out on the wire, and
# held until its rate-limit place is free (epoch seconds; 0: at once).
_ON_SENT: contextvars.ContextVar[Callable[[float], None] | None] = contextvars.ContextVar(
    "genqueue_on_sent", default=None
)
_NOT_BEFORE: contextvars.ContextVar[float] = contextvars.ContextVar("genqueue_not_before", default=0.0)


async def _body_going_out(session: Any, context: Any, params: Any) -> None:
    """aiohttp trace hook, called just before the request's first bytes are written: aiohttp
    holds the headers back to send them with the body, which a task of their own writes
    once the loop gets to it. A call granted ahead of its place waits here until the place
    is free; then the call is dated. Once per call: the body goes in one write."""
    at = _NOT_BEFORE.get()
    if at:
        _NOT_BEFORE.set(0.0)
        await hold_until(at)
    on_sent = _ON_SENT.get()
    if on_sent is not None:
        _ON_SENT.set(None)
        on_sent(time.time())


def sniff_mime(data: bytes) -> str | None:
    """The mime type of PNG, JPEG or WebP bytes, from their magic numbers; None for anything else."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class GeminiProvider:
    """Makes images with a Gemini image model through `generate_content` with input images."""

    def __init__(self, config: ProviderConfig) -> None:
        self._model = config.model
        self._http = types.HttpOptions(
            base_url=config.base_url or None,
            timeout=max(1, round(config.timeout_seconds * 1000)),  # the SDK counts milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._size = config.image_size
        self._clients: dict[Secret, genai.Client] = {}
        self._keys: list[Secret] = []
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def prepare(self, keys: Iterable[Secret]) -> None:
        """Remember the keys; `start` makes their clients on the loop that will call."""
        self._keys = list(keys)

    async def start(self) -> None:
        """On the loop that makes the calls: one HTTP session whose trace hook dates each
        request when it goes out on the wire, and every key's client on it. A client costs
        ~170 ms of blocking set-up (SSL contexts), which inside the first burst would delay
        every call of the worker, so this runs before (a worker's ping) and at most once."""
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is loop:
            return
        self._loop = loop
        trace = aiohttp.TraceConfig()
        trace.on_request_chunk_sent.append(_body_going_out)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), trace_configs=[trace], read_bufsize=_READ_BUFFER
        )
        self._http = self._http.model_copy(update={"aiohttp_client": self._session})
        self._clients.clear()
        for key in self._keys:
            self._client(key)
        self._warm_types()

    def _warm_types(self) -> None:
        """Build each google-genai type a call uses once, with a tiny image. The SDK's pydantic
        types complete their schemas on first use, ~0.2 s before the first request goes out
        and again on its answer, which inside a burst would hold up a worker's first calls."""
        png = images.stock_png((8, 8))
        for kind, roles in INPUT_ROLES.items():
            warm = ImageRequest("warm-up", kind, "", dict.fromkeys(roles, png), {})
            _contents(warm)
            self._config(warm, PRIORITY)
        data = base64.b64encode(png).decode()
        part = {"inlineData": {"mimeType": "image/png", "data": data}}
        types.GenerateContentResponse.model_validate(
            {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}]}
        )

    def _config(self, request: ImageRequest, tier: str = STANDARD) -> types.GenerateContentConfig:
        aspect = request.options.get("aspect_ratio")
        seed = request.options.get("seed")
        return types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            seed=seed if isinstance(seed, int) else None,
            # Standard is sent as no field: the API's default (the SDK's ServiceTier.UNSPECIFIED).
            service_tier=_TIERS.get(tier),
            image_config=types.ImageConfig(
                aspect_ratio=aspect if isinstance(aspect, str) else "3:4", image_size=self._size
            ),
        )

    def _client(self, key: Secret) -> genai.Client:
        client = self._clients.get(key)
        if client is None:
            client = genai.Client(vertexai=False, api_key=key.reveal(), http_options=self._http)
            self._clients[key] = client
        return client

    async def generate(
        self,
        request: ImageRequest,
        key: Secret,
        on_sent: Callable[[float], None] | None = None,
        not_before: float = 0.0,
        tier: str = STANDARD,
    ) -> ImageResult:
        """One image for `request` with `key`, asking for service `tier`; ProviderError (its
        `failure` sorted) otherwise.

        `on_sent` is called with the time the request went out on the wire (after the SDK
        built it), not called when it never did. With `not_before`, the request, built and
        connected, waits until then before it goes out. The result names the tier upstream
        says served the call (`served_tier`)."""
        await self.start()
        contents = _contents(request)
        config = self._config(request, tier)
        model = request.model or self._model  # a fallback route may name its own
        _ON_SENT.set(on_sent)
        _NOT_BEFORE.set(not_before)
        try:
            response = await self._client(key).aio.models.generate_content(
                model=model, contents=contents, config=config
            )
        except (
            errors.APIError,
            errors.UnknownApiResponseError,
            OSError,
            aiohttp.ClientError,
            httpx.HTTPError,
        ) as exc:
            raise _scrubbed(classify(exc, model), key) from None
        finally:
            _ON_SENT.set(None)
            _NOT_BEFORE.set(0.0)
        return replace(_image(response), service_tier=served_tier(response))

    async def aclose(self) -> None:
        """Close every client's connections (call on the loop that made the calls)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aio.aclose()
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _contents(request: ImageRequest) -> list[Any]:
    if request.kind == "photography":
        text = _PHOTOGRAPHY.format(prompt=request.prompt or "natural, flattering")
    elif request.kind == "fitting":
        text = _FITTING.format(prompt=request.prompt).strip()
    else:
        raise ProviderError(f"unknown task kind {request.kind!r}", failure=Failure.PERMANENT)
    parts: list[Any] = []
    for role in INPUT_ROLES[request.kind]:
        data = request.images.get(role)
        if not data:
            raise ProviderError(f"missing input image {role!r}", failure=Failure.PERMANENT)
        mime = sniff_mime(data)
        if mime is None:
            raise ProviderError(f"input image {role!r} is not PNG, JPEG or WebP", failure=Failure.PERMANENT)
        parts.append(types.Part.from_bytes(data=data, mime_type=mime))
    return [*parts, text]


def served_tier(response: types.GenerateContentResponse) -> str:
    """The service tier that served the call, as the `x-gemini-service-tier` response header
    names it (the SDK keeps the headers in `sdk_http_response`), lower case; "": not said."""
    raw = response.sdk_http_response
    headers = {k.lower(): v for k, v in (raw.headers or {}).items()} if raw is not None else {}
    text = str(headers.get(TIER_HEADER) or "").strip().lower().removeprefix("service_tier_")
    return text if _TIER_WORD.fullmatch(text) else ""


def _image(response: types.GenerateContentResponse) -> ImageResult:
    texts: list[str] = []
    found: list[tuple[bool, bytes, str | None]] = []
    for part in response.parts or ():
        blob = part.inline_data
        if blob is not None and blob.data:
            found.append((bool(part.thought), blob.data, blob.mime_type))
        elif part.text and not part.thought:
            texts.append(part.text)
    if found:
        # Thinking models may send draft images marked `thought` first: take the last final one.
        _, data, mime = ([image for image in found if not image[0]] or found)[-1]
        return ImageResult(data=data, mime_type=mime or sniff_mime(data) or "application/octet-stream")
    candidate = response.candidates[0] if response.candidates else None
    finish = candidate.finish_reason if candidate is not None else None
    feedback = response.prompt_feedback
    why = [f"finishReason {getattr(finish, 'value', finish) or 'none'}"]
    if feedback is not None and feedback.block_reason is not None:
        why.append(f"prompt blocked: {getattr(feedback.block_reason, 'value', feedback.block_reason)}")
    if texts:
        why.append(f"text: {_snippet(' '.join(texts))}")
    raise ProviderError(
        f"the model answered without an image ({'; '.join(why)})", code=200, failure=Failure.PERMANENT
    )


def _snippet(text: str) -> str:
    flat = _KEYLIKE.sub("[redacted]", " ".join(text.split()))
    return flat if len(flat) <= _SNIPPET else flat[: _SNIPPET - 1] + "\u2026"


def _scrubbed(error: ProviderError, key: Secret) -> ProviderError:
    secret = key.reveal()
    if secret and secret in error.reason:
        error.reason = error.reason.replace(secret, "[redacted]")
        error.args = (error.reason,)
    return error


def _retry_delay(value: Any) -> float | None:
    if isinstance(value, str):
        match = _DURATION.match(value)
        return float(match.group(1)) if match else None
    if isinstance(value, dict):  # the protobuf form {"seconds": 41, "nanos": 16000000}
        try:
            return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def _quota_value(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _is_daily(violation: dict[str, Any]) -> bool:
    text = f"{violation.get('quotaId', '')} {violation.get('quotaMetric', '')}".lower()
    return "perday" in text or "per_day" in text


def _throttled(code: int, entries: list[dict[str, Any]]) -> ProviderError:
    retry_after: float | None = None
    violations: list[dict[str, Any]] = []
    for entry in entries:
        kind = str(entry.get("@type", ""))
        if kind.endswith("RetryInfo"):
            retry_after = _retry_delay(entry.get("retryDelay"))
        elif kind.endswith("QuotaFailure"):
            violations += [v for v in entry.get("violations") or () if isinstance(v, dict)]
    # The violation that decides: a daily one, then one with no quota at all, then the first.
    violation = next(
        (v for v in violations if _is_daily(v)),
        next(
            (v for v in violations if _quota_value(v.get("quotaValue")) == 0),
            violations[0] if violations else {},
        ),
    )
    quota_id = str(violation.get("quotaId", ""))
    value = _quota_value(violation.get("quotaValue"))
    common: dict[str, Any] = {
        "code": code,
        "retry_after": retry_after,
        "quota_id": quota_id,
        "quota_value": value,
    }
    if value == 0:
        name = quota_id or "(unnamed)"
        reason = f"429 quota {name} is 0 on this project: there is no quota, so waiting cannot help"
        return ProviderError(reason, failure=Failure.QUOTA_DAY, **common)
    if violation and _is_daily(violation):
        reason = f"429 daily quota {quota_id} ({value} a day) used up; it resets at midnight Pacific"
        return ProviderError(reason, failure=Failure.QUOTA_DAY, **common)
    wait = f"retry in {retry_after:g}s" if retry_after is not None else "no retry delay given"
    limit = f"{quota_id} (limit {value})" if quota_id else "no quota details"
    return ProviderError(f"429 rate limited: {limit}; {wait}", failure=Failure.THROTTLED, **common)


def _api_error(exc: errors.APIError, model: str) -> ProviderError:
    code = int(exc.code or 0)
    status = exc.status or "error"
    body = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else {}
    raw_entries = body.get("details") if isinstance(body, dict) else None
    entries = [e for e in raw_entries if isinstance(e, dict)] if isinstance(raw_entries, list) else []
    message = _snippet(str(exc.message or ""))
    if code == 429:
        return _throttled(code, entries)
    reasons = [str(e.get("reason")) for e in entries if str(e.get("@type", "")).endswith("ErrorInfo")]
    if code in (401, 403) or (code == 400 and "API_KEY_INVALID" in reasons):
        # The message is left out on purpose: a real 403 quotes the key's consumer id.
        detail = f" ({reasons[0]})" if reasons else ""
        return ProviderError(
            f"{code} {status}: the key was rejected{detail}", code=code, failure=Failure.KEY_REJECTED
        )
    if code == 404:
        found = _MODEL.search(str(exc.message or ""))
        name = found.group(1) if found else model
        reason = f"404 {status}: model {name or '(unknown)'} is not served (retired or misspelt)"
        return ProviderError(reason, code=code, failure=Failure.MODEL_GONE)
    failure = Failure.TRANSIENT if code >= 500 or code in _RETRYABLE_STATUSES else Failure.PERMANENT
    return ProviderError(f"{code} {status}: {message or 'no message'}", code=code, failure=failure)


def classify(exc: BaseException, model: str = "") -> ProviderError:
    """What a failed SDK call means for genqueue, as a ProviderError (pure: no I/O, no key)."""
    if isinstance(exc, errors.APIError):
        return _api_error(exc, model)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return ProviderError("the upstream call timed out", failure=Failure.TRANSIENT)
    if isinstance(exc, aiohttp.ClientError | httpx.TransportError | OSError):
        detail = _snippet(str(exc)) or type(exc).__name__
        return ProviderError(f"cannot reach upstream: {detail}", failure=Failure.TRANSIENT)
    return ProviderError(f"upstream call failed: {type(exc).__name__}", failure=Failure.TRANSIENT)
