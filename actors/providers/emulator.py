"""A Gemini-compatible image API for tests and load runs: per-project quotas, real PNGs, real error bodies.

Serves `POST /{v1,v1beta}/models/{model}:generateContent` the way the Gemini Developer API
does, plus `GET /stats` and `POST /stats/reset`. The keys of one project share its budget:
a sliding window of accepted calls (capacity = rpm * window / 60) and a count per calendar
day in America/Los_Angeles. `ProjectQuota` is that arithmetic, with time passed in.

    with running(EmulatorConfig(pools=(parse_pool("a:600:key1,key2"),), window_seconds=1)) as url:
        ...  # HttpOptions(base_url=url)
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from PIL import Image, ImageDraw

from actors.keypool_logic import window_capacity

PACIFIC = ZoneInfo("America/Los_Angeles")
DEFAULT_MODELS = ("gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-lite-image")
PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel"
_RPC = "type.googleapis.com/google.rpc."
_RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
_URLSAFE = str.maketrans("-_", "+/")
_PROBE = 4096  # base64 characters checked at each end of inline data


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One emulated project: its per-minute limit, its keys, and its own per-day limit if any."""

    name: str
    rpm: int
    keys: tuple[str, ...] = field(repr=False)
    rpd: int | None = None  # None: the emulator-wide `rpd`


def _whole(text: str, what: str, pool: str, minimum: int) -> int:
    if not text.isdigit() or int(text) < minimum:
        raise ValueError(f"pool {pool!r}: {what} must be a whole number >= {minimum}, got {text!r}")
    return int(text)


def parse_pool(spec: str) -> PoolSpec:
    """A PoolSpec from `NAME:RPM:KEY[,KEY...][:RPD]`; a ValueError says what is wrong, never echoing keys."""
    fields_ = [part.strip() for part in spec.split(":")]
    if len(fields_) not in (3, 4):
        raise ValueError(f"a pool is NAME:RPM:KEY[,KEY...][:RPD], got {len(fields_)} ':'-separated fields")
    name, rpm_text, keys_text = fields_[:3]
    if not name:
        raise ValueError("a pool needs a NAME before the first ':'")
    rpm = _whole(rpm_text, "RPM", name, 1)
    keys = tuple(k.strip() for k in keys_text.split(","))
    if not all(keys):
        raise ValueError(f"pool {name!r}: every KEY must be non-empty")
    if len(set(keys)) != len(keys):
        raise ValueError(f"pool {name!r}: a KEY is listed twice")
    rpd = _whole(fields_[3], "RPD", name, 0) if len(fields_) == 4 else None
    return PoolSpec(name=name, rpm=rpm, keys=keys, rpd=rpd)


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


@dataclass(frozen=True, slots=True)
class Verdict:
    """One call's fate under a project's quota: accepted, or the limit hit and upstream's wait."""

    accepted: bool
    limit: str = ""  # "minute" or "day" when refused
    retry_after: float = 0.0


def seconds_to_pacific_midnight(wall: dt.datetime) -> float:
    """Seconds from the aware moment `wall` to the next midnight in America/Los_Angeles."""
    tomorrow = wall.astimezone(PACIFIC).date() + dt.timedelta(days=1)
    midnight = dt.datetime.combine(tomorrow, dt.time(), tzinfo=PACIFIC)
    # Through UTC: subtracting two datetimes that share a tzinfo ignores a DST change between them.
    return (midnight.astimezone(dt.UTC) - wall.astimezone(dt.UTC)).total_seconds()


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
        self._day: dt.date | None = None

    def admit(self, now: float, wall: dt.datetime) -> Verdict:
        """Accept or refuse a call arriving at monotonic `now`, aware wall-clock `wall`."""
        day = wall.astimezone(PACIFIC).date()
        if day != self._day:
            self._day, self.day_calls = day, 0
        if self.rpd and self.day_calls >= self.rpd:
            return Verdict(False, "day", seconds_to_pacific_midnight(wall))
        while self._accepted and now - self._accepted[0] >= self.window:
            self._accepted.popleft()
        if len(self._accepted) >= self.capacity:
            return Verdict(False, "minute", self.window - (now - self._accepted[0]))
        self._accepted.append(now)
        self.day_calls += 1
        self.max_window_calls = max(self.max_window_calls, len(self._accepted))
        return Verdict(True)


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
        {"@type": _RPC + "QuotaFailure", "violations": [violation]},
        {
            "@type": _RPC + "Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS_URL}],
        },
        {"@type": _RPC + "RetryInfo", "retryDelay": _duration(verdict.retry_after)},
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


def _answer(parts: list[dict[str, Any]]) -> bytes:
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
    return json.dumps({"candidates": [candidate], "usageMetadata": _USAGE}).encode()


class BadRequest(ValueError):
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


def check_request(raw: bytes) -> None:
    """Raise BadRequest unless `raw` is a generateContent body: JSON contents whose parts decode."""
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


@dataclass(slots=True)
class KeyStats:
    """What one key's calls came to."""

    project: str
    calls: int = 0
    ok: int = 0
    throttled: int = 0
    errors: int = 0


@dataclass(slots=True)
class ProjectStats:
    """What one project's calls came to."""

    accepted: int = 0
    throttled: int = 0
    throttled_day: int = 0
    in_flight: int = 0
    peak_concurrency: int = 0


def key_label(project: str, index: int, key: str) -> str:
    """A name for a key that is safe to show: project, position, and a short tail of a long key."""
    tail = key[-min(4, len(key) // 3) :] if len(key) >= 3 else ""
    return f"{project}#{index + 1}" + (f"\u2026{tail}" if tail else "")


@dataclass(slots=True)
class _Project:
    quota: ProjectQuota
    stats: ProjectStats = field(default_factory=ProjectStats)


class Emulator:
    """The server's state and handlers; time and randomness come in through the constructor."""

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._clock, self._wall = clock, wall
        self._rng = rng or random.Random(config.seed)
        self._projects = {
            p.name: _Project(
                ProjectQuota(p.rpm, config.window_seconds, config.rpd if p.rpd is None else p.rpd)
            )
            for p in config.pools
        }
        self._keys: dict[str, tuple[str, KeyStats]] = {}
        for pool in config.pools:
            for i, key in enumerate(pool.keys):
                self._keys[key] = (key_label(pool.name, i, key), KeyStats(pool.name))
        self._revoked = frozenset(config.revoked)
        self._images = [
            _answer([{"inlineData": {"mimeType": "image/png", "data": b64}}]) for b64 in render_pngs()
        ]
        self._empty = _answer([{"text": "I could not make an image from this request."}])
        self._in_flight = self._peak = self._unknown_keys = 0

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version:v1|v1beta}/models/{model}:generateContent", self._generate)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/stats/reset", self._reset)
        return app

    async def _generate(self, request: web.Request) -> web.Response:
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        try:
            return await self._by_key(request)
        finally:
            self._in_flight -= 1

    async def _by_key(self, request: web.Request) -> web.Response:
        key = request.headers.get("x-goog-api-key") or request.query.get("key", "")
        if not key:
            return _json(status_body(403, "PERMISSION_DENIED", _UNREGISTERED))
        known = self._keys.get(key)
        if known is None:
            self._unknown_keys += 1
        stats = known[1] if known else None
        if stats:
            stats.calls += 1
        if key in self._revoked:
            response = _json(
                status_body(403, "PERMISSION_DENIED", _SUSPENDED, _error_info("CONSUMER_SUSPENDED"))
            )
        elif known is None:
            return _json(status_body(400, "INVALID_ARGUMENT", _KEY_INVALID, _error_info("API_KEY_INVALID")))
        else:
            project = self._projects[known[1].project]
            project.stats.in_flight += 1
            project.stats.peak_concurrency = max(project.stats.peak_concurrency, project.stats.in_flight)
            try:
                response = await self._serve(request, project)
            finally:
                project.stats.in_flight -= 1
        if stats:
            if response.status == 200:
                stats.ok += 1
            elif response.status == 429:
                stats.throttled += 1
            else:
                stats.errors += 1
        return response

    async def _serve(self, request: web.Request, project: _Project) -> web.Response:
        version, model = request.match_info["version"], request.match_info["model"]
        if model not in self.config.models:
            message = (
                f"models/{model} is not found for API version {version}, or is not supported for "
                "generateContent. Call ListModels to see the list of available models and their "
                "supported methods."
            )
            return _json(status_body(404, "NOT_FOUND", message))
        try:
            check_request(await request.read())
        except BadRequest as exc:
            return _json(status_body(400, "INVALID_ARGUMENT", str(exc)))
        verdict = project.quota.admit(self._clock(), self._wall())
        if not verdict.accepted:
            project.stats.throttled += 1
            project.stats.throttled_day += verdict.limit == "day"
            return _json(quota_body(verdict, project.quota, model))
        project.stats.accepted += 1
        cfg = self.config
        await asyncio.sleep(max(0.0, cfg.latency + self._rng.uniform(-cfg.jitter, cfg.jitter)))
        if cfg.error_rate and self._rng.random() < cfg.error_rate:
            return _json(status_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later."))
        if cfg.empty_rate and self._rng.random() < cfg.empty_rate:
            return _raw(self._empty)
        return _raw(self._rng.choice(self._images))

    def stats(self) -> dict[str, Any]:
        """Counts per key (by safe label) and per project, and the peak number of calls in flight."""
        return {
            "keys": {label: asdict(s) for label, s in self._keys.values()},
            "projects": {
                name: {
                    **asdict(p.stats),
                    "rpm": p.quota.rpm,
                    "capacity": p.quota.capacity,
                    "window_seconds": p.quota.window,
                    "rpd": p.quota.rpd,
                    "day_calls": p.quota.day_calls,
                    "max_window_calls": p.quota.max_window_calls,
                }
                for name, p in self._projects.items()
            },
            "unknown_key_calls": self._unknown_keys,
            "in_flight": self._in_flight,
            "peak_concurrency": self._peak,
        }

    def reset(self) -> None:
        """Zero every count; the quotas keep what they have used."""
        for _, stats in self._keys.values():
            stats.calls = stats.ok = stats.throttled = stats.errors = 0
        for p in self._projects.values():
            p.stats = ProjectStats(in_flight=p.stats.in_flight)
            p.quota.max_window_calls = 0
        self._peak, self._unknown_keys = self._in_flight, 0

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats(), 200)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json(self.stats(), 200)


_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_SUSPENDED = "Permission denied: Consumer has been suspended."
_KEY_INVALID = "API key not valid. Please pass a valid API key."


def _error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": _RPC + "ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


def _json(body: dict[str, Any], status: int | None = None) -> web.Response:
    code = status if status is not None else int(body["error"]["code"])
    return web.Response(status=code, body=json.dumps(body).encode(), content_type="application/json")


def _raw(body: bytes) -> web.Response:
    return web.Response(status=200, body=body, content_type="application/json")


@contextmanager
def running(config: EmulatorConfig) -> Iterator[str]:
    """Serve `config` on a background thread with its own event loop; yield the base URL, then stop."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(
            Emulator(config).app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        stop = asyncio.Event()
        try:
            await runner.setup()
            site = web.TCPSite(runner, config.host, config.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            host = f"[{host}]" if ":" in host else host
            state.update(url=f"http://{host}:{port}", loop=asyncio.get_running_loop(), stop=stop)
        except BaseException as exc:
            state["error"] = exc
            raise
        finally:
            ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException:  # already handed to the caller through `state`
            if "error" not in state:
                raise

    thread = threading.Thread(target=main, name="gemini-emulator", daemon=True)
    thread.start()
    ready.wait()
    if "error" in state:
        thread.join()
        raise RuntimeError(f"the emulator could not start: {state['error']}") from state["error"]
    try:
        yield str(state["url"])
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join()
