"""The Gemini API as the emulator serves it: the wire format's bodies and checks, and the
per-project quota arithmetic (a sliding window of accepted calls and a count per Pacific
day), with time passed in.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from actors.forecast import window_capacity
from events.days import next_pacific_midnight, pacific_day
from events.errors import GenqueueError

DEFAULT_MODELS = (
    "gemini-3.1-flash-image",
    "gemini-3-pro-image-preview",
    "gemini-3-pro-image",
    "gemini-3.1-flash-lite-image",
)
# A project's priority limit, as a share of its standard one when not given.
PRIORITY_SHARE = 0.3
PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel"
RPC_TYPE = "type.googleapis.com/google.rpc."
_RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
_URLSAFE = str.maketrans("-_", "+/")
_PROBE = 4096  # base64 characters checked at each end of inline data


@dataclass(frozen=True, slots=True)
class TierLimits:
    """A project's calls per minute to one model, per service tier. A call served at priority
    also takes a place in the standard window; flex has a window of its own."""

    rpm: int
    priority_rpm: int
    flex_rpm: int

    @classmethod
    def of(cls, rpm: int, priority_rpm: int | None = None, flex_rpm: int | None = None) -> TierLimits:
        """The limits at `rpm` standard; priority PRIORITY_SHARE of it and flex the same, unless given."""
        priority = max(1, int(rpm * PRIORITY_SHARE)) if priority_rpm is None else priority_rpm
        return cls(rpm, priority, rpm if flex_rpm is None else flex_rpm)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One emulated project: its per-minute limit, its keys, and its own per-day limit if any.

    `priority_rpm` and `flex_rpm` are its other tiers' limits (None: see `TierLimits.of`);
    `models` gives a model limits of its own (a model not named there has the project's).
    Every model has its own windows and day, as upstream's quotas are per project per model.
    """

    name: str
    rpm: int
    keys: tuple[str, ...] = field(repr=False)
    rpd: int | None = None  # None: the emulator-wide `rpd`
    priority_rpm: int | None = None
    flex_rpm: int | None = None
    models: tuple[tuple[str, TierLimits], ...] = ()

    def limits(self, model: str) -> TierLimits:
        """The project's limits for `model`."""
        table = dict(self.models)
        return table[model] if model in table else TierLimits.of(self.rpm, self.priority_rpm, self.flex_rpm)


def _whole(text: str, what: str, pool: str, minimum: int) -> int:
    if not text.isdigit() or int(text) < minimum:
        raise ValueError(f"pool {pool!r}: {what} must be a whole number >= {minimum}, got {text!r}")
    return int(text)


def parse_pool(spec: str) -> PoolSpec:
    """A PoolSpec from `NAME:RPM[/PRIORITY_RPM[/FLEX_RPM]]:KEY[,KEY...][:RPD]`; a ValueError says
    what is wrong, never echoing keys."""
    fields_ = [part.strip() for part in spec.split(":")]
    if len(fields_) not in (3, 4):
        raise ValueError(f"a pool is NAME:RPM:KEY[,KEY...][:RPD], got {len(fields_)} ':'-separated fields")
    name, rpm_text, keys_text = fields_[:3]
    if not name:
        raise ValueError("a pool needs a NAME before the first ':'")
    rates = rpm_text.split("/")
    if len(rates) > 3:
        raise ValueError(f"pool {name!r}: RPM is RPM[/PRIORITY_RPM[/FLEX_RPM]], got {rpm_text!r}")
    rpm = _whole(rates[0], "RPM", name, 1)
    tiers = [_whole(text, "a tier's RPM", name, 0) for text in rates[1:]] + [None, None]
    keys = tuple(k.strip() for k in keys_text.split(","))
    if not all(keys):
        raise ValueError(f"pool {name!r}: every KEY must be non-empty")
    if len(set(keys)) != len(keys):
        raise ValueError(f"pool {name!r}: a KEY is listed twice")
    rpd = _whole(fields_[3], "RPD", name, 0) if len(fields_) == 4 else None
    return PoolSpec(name=name, rpm=rpm, keys=keys, rpd=rpd, priority_rpm=tiers[0], flex_rpm=tiers[1])


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything the emulator does; port 0 picks a free port."""

    pools: tuple[PoolSpec, ...]
    host: str = "127.0.0.1"
    port: int = 0
    window_seconds: float = 60.0
    latency: float = 0.5
    jitter: float = 0.2
    error_rate: float = 0.0
    empty_rate: float = 0.0
    rpd: int = 0  # per project per Pacific day; 0 = unlimited
    revoked: tuple[str, ...] = field(default=(), repr=False)
    models: tuple[str, ...] = DEFAULT_MODELS
    seed: int | None = None
    flex_latency: float = 0.05  # added to a call served at flex (best-effort latency)

    def __post_init__(self) -> None:
        if not self.pools:
            raise ValueError("the emulator needs at least one pool")
        if len({p.name for p in self.pools}) != len(self.pools):
            raise ValueError("pool names must be unique")
        keys = [k for p in self.pools for k in p.keys]
        if len(set(keys)) != len(keys):
            raise ValueError("a key belongs to two pools")
        if self.window_seconds <= 0 or self.latency < 0 or self.jitter < 0 or self.rpd < 0:
            raise ValueError("window_seconds must be > 0; latency, jitter and rpd >= 0")
        if not (0.0 <= self.error_rate <= 1.0 and 0.0 <= self.empty_rate <= 1.0):
            raise ValueError("error_rate and empty_rate must lie in [0, 1]")
        if not self.models:
            raise ValueError("at least one model is needed")
        if self.flex_latency < 0:
            raise ValueError("flex_latency must be >= 0")
        for pool in self.pools:
            for model, limits in pool.models:
                if model not in self.models:
                    raise ValueError(f"pool {pool.name!r}: model {model!r} is not among the models served")
                if limits.rpm < 1 or min(limits.priority_rpm, limits.flex_rpm) < 0:
                    raise ValueError(f"pool {pool.name!r}, model {model!r}: rpm >= 1, tier limits >= 0")
            if min(pool.priority_rpm or 0, pool.flex_rpm or 0) < 0:
                raise ValueError(f"pool {pool.name!r}: tier limits must be >= 0")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One call's fate under a project's quota: accepted, or the limit hit and upstream's wait."""

    accepted: bool
    limit: str = ""  # "minute" or "day" when refused
    retry_after: float = 0.0
    tier: str = ""  # the service tier that served an accepted call


def seconds_to_pacific_midnight(wall: dt.datetime) -> float:
    """Seconds from the aware moment `wall` to the next midnight in America/Los_Angeles."""
    at = wall.timestamp()
    return next_pacific_midnight(at) - at


class ProjectQuota:
    """One project's budget: accepted calls in a sliding window, and accepted calls per Pacific day.

    A call arriving at `now` is accepted iff fewer than `capacity` accepted calls arrived in
    (now - window, now]; refused calls take nothing.
    """

    def __init__(self, rpm: int, window: float, rpd: int) -> None:
        self.rpm, self.window, self.rpd = rpm, window, rpd
        self.capacity = window_capacity(rpm, window)
        self.day_calls = 0
        self.max_window_calls = 0  # the most accepted calls seen in one window
        self._accepted: deque[float] = deque()
        self._day = ""

    def admit(self, now: float, wall: dt.datetime) -> Verdict:
        """Accept or refuse a call arriving at monotonic `now`, aware wall-clock `wall`."""
        day = pacific_day(wall.timestamp())
        if day != self._day:
            self._day, self.day_calls = day, 0
        if self.rpd and self.day_calls >= self.rpd:
            return Verdict(False, "day", seconds_to_pacific_midnight(wall))
        if not self.room(now):
            return Verdict(False, "minute", self.window - (now - self._accepted[0]))
        self.take(now)
        self.day_calls += 1
        return Verdict(True)

    def room(self, now: float) -> bool:
        """Whether the window at `now` has a place left (the day not counted)."""
        while self._accepted and now - self._accepted[0] >= self.window:
            self._accepted.popleft()
        return len(self._accepted) < self.capacity

    def take(self, now: float) -> None:
        """Take a place in the window at `now` (after `room` said there is one)."""
        self._accepted.append(now)
        self.max_window_calls = max(self.max_window_calls, len(self._accepted))


def status_body(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    """A google.rpc.Status error body."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


def _duration(seconds: float) -> str:
    return f"{max(seconds, 0.001):.3f}".rstrip("0").rstrip(".") + "s"


def quota_body(verdict: Verdict, quota: ProjectQuota, model: str) -> dict[str, Any]:
    """The 429 RESOURCE_EXHAUSTED body for a refused call, shaped like the real API's."""
    per_day = verdict.limit == "day"
    metric = "generativelanguage.googleapis.com/" + (
        "generate_requests_per_model_per_day" if per_day else "generate_content_paid_tier_requests"
    )
    limit = quota.rpd if per_day else quota.rpm
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        f"information on this error, head to: {_RATE_LIMITS_URL}.\n"
        f"* Quota exceeded for metric: {metric}, limit: {limit}, model: {model}\n"
        f"Please retry in {max(verdict.retry_after, 0.001):.3f}s."
    )
    violation = {
        "quotaMetric": metric,
        "quotaId": PER_DAY if per_day else PER_MINUTE,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(limit),
    }
    return status_body(
        429,
        "RESOURCE_EXHAUSTED",
        message,
        {"@type": RPC_TYPE + "QuotaFailure", "violations": [violation]},
        {
            "@type": RPC_TYPE + "Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS_URL}],
        },
        {"@type": RPC_TYPE + "RetryInfo", "retryDelay": _duration(verdict.retry_after)},
    )


def render_pngs() -> list[str]:
    """A few small real PNGs as standard base64, rendered once so that a call costs no CPU."""
    out = []
    for shade in ((40, 70, 120), (200, 120, 60), (60, 140, 90), (150, 60, 140)):
        im = Image.new("RGB", (96, 128), shade)
        draw = ImageDraw.Draw(im)
        draw.ellipse((28, 20, 68, 68), fill=(235, 200, 170))
        draw.rounded_rectangle((14, 72, 82, 128), radius=18, fill=(255 - shade[0], 255 - shade[1], 255))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


_USAGE = {"promptTokenCount": 267, "candidatesTokenCount": 1290, "totalTokenCount": 1557}


def answer_body(parts: list[dict[str, Any]]) -> bytes:
    """A generateContent success body holding `parts`."""
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
    return json.dumps({"candidates": [candidate], "usageMetadata": _USAGE}).encode()


class BadRequest(GenqueueError, ValueError):
    """A request body the real API would refuse with 400 INVALID_ARGUMENT."""


def check_base64(text: str) -> None:
    """Raise ValueError unless `text` looks like base64 in either alphabet (padding optional).

    Only the first and last few KB are decoded: enough to catch a wrong field, cheap for a
    megabyte image.
    """
    compact = text.strip()
    compact += "=" * (-len(compact) % 4)
    if not compact or len(compact) % 4:
        raise ValueError("empty or truncated base64")
    tail = max(0, len(compact) - _PROBE) // 4 * 4
    for chunk in (compact[:_PROBE], compact[tail:]):
        base64.b64decode(chunk.translate(_URLSAFE), validate=True)


def check_request(raw: bytes) -> dict[str, Any]:
    """The generateContent body `raw`; BadRequest unless it is JSON contents whose parts decode."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest("Invalid JSON payload received. Unexpected token.") from exc
    contents = body.get("contents") if isinstance(body, dict) else None
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise BadRequest(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        for j, part in enumerate(parts):
            blob = part.get("inlineData", part.get("inline_data")) if isinstance(part, dict) else None
            if blob is None:
                continue
            where = f"contents[{i}].parts[{j}].inline_data"
            if not isinstance(blob, dict) or not (blob.get("mime_type") or blob.get("mimeType")):
                raise BadRequest(f"* GenerateContentRequest.{where}.mime_type: a mime type is required")
            try:
                check_base64(str(blob.get("data", "")))
            except ValueError as exc:
                raise BadRequest(
                    f"Invalid value at '{where}.data' (TYPE_BYTES), Base64 decoding failed"
                ) from exc
    return dict(body)


def key_label(project: str, index: int, key: str) -> str:
    """A name for a key that is safe to show: project, position, and a short tail of a long key."""
    tail = key[-min(4, len(key) // 3) :] if len(key) >= 3 else ""
    return f"{project}#{index + 1}" + (f"\u2026{tail}" if tail else "")
