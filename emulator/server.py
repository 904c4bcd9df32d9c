"""A Gemini-compatible image API for tests and load runs: per-project quotas, real PNGs, real error bodies.

Serves `POST /{v1,v1beta}/models/{model}:generateContent` the way the Gemini Developer API
does, plus `GET /stats` and `POST /stats/reset`. The keys of one project share its budget
for each model: a sliding window of accepted calls (capacity = rpm * window / 60) and a
count per calendar day in America/Los_Angeles (`emulator.wire` holds that arithmetic and the
wire format), with a window per service tier (`emulator.tiers`: priority counts against
standard, and over its own limit is served at standard). Every answer names the tier that
served it in the `x-gemini-service-tier` header.

    with running(EmulatorConfig(pools=(parse_pool("a:600:key1,key2"),), window_seconds=1)) as url:
        ...  # HttpOptions(base_url=url)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from actors.config import FLEX, PRIORITY, STANDARD
from emulator.tiers import TIER_HEADER, ModelQuota, requested_tier
from emulator.wire import (
    RPC_TYPE,
    BadRequest,
    EmulatorConfig,
    PoolSpec,
    answer_body,
    check_request,
    key_label,
    quota_body,
    render_pngs,
    status_body,
)


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
    """What one project's calls came to: accepted ones by the tier that served them, and the
    priority calls served at standard (`downgraded`)."""

    accepted: int = 0
    throttled: int = 0
    throttled_day: int = 0
    in_flight: int = 0
    peak_concurrency: int = 0
    served_standard: int = 0
    served_priority: int = 0
    served_flex: int = 0
    downgraded: int = 0


@dataclass(slots=True)
class _Project:
    spec: PoolSpec
    window: float
    rpd: int
    stats: ProjectStats = field(default_factory=ProjectStats)
    models: dict[str, ModelQuota] = field(default_factory=dict)

    def quota(self, model: str) -> ModelQuota:
        """The project's budget for `model` (each model has its own, as upstream's)."""
        if model not in self.models:
            self.models[model] = ModelQuota(self.spec.limits(model), self.window, self.rpd)
        return self.models[model]


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
            p.name: _Project(p, config.window_seconds, config.rpd if p.rpd is None else p.rpd)
            for p in config.pools
        }
        self._keys: dict[str, tuple[str, KeyStats]] = {}
        for pool in config.pools:
            for i, key in enumerate(pool.keys):
                self._keys[key] = (key_label(pool.name, i, key), KeyStats(pool.name))
        self._revoked = frozenset(config.revoked)
        self._images = [
            answer_body([{"inlineData": {"mimeType": "image/png", "data": b64}}]) for b64 in render_pngs()
        ]
        self._empty = answer_body([{"text": "I could not make an image from this request."}])
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
            response = await self._by_key(request)
        finally:
            self._in_flight -= 1
        # Every answer names a tier: the one that served it, else standard.
        response.headers.setdefault(TIER_HEADER, STANDARD)
        return response

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
            tier = requested_tier(check_request(await request.read()))
        except BadRequest as exc:
            return _json(status_body(400, "INVALID_ARGUMENT", str(exc)))
        quota = project.quota(model)
        verdict = quota.admit(tier, self._clock(), self._wall())
        if not verdict.accepted:
            project.stats.throttled += 1
            project.stats.throttled_day += verdict.limit == "day"
            return _json(quota_body(verdict, quota.standard, model))
        stats, served = project.stats, verdict.tier
        stats.accepted += 1
        stats.served_standard += served == STANDARD
        stats.served_priority += served == PRIORITY
        stats.served_flex += served == FLEX
        stats.downgraded += tier == PRIORITY and served != PRIORITY
        cfg = self.config
        late = cfg.flex_latency if served == FLEX else 0.0
        await asyncio.sleep(max(0.0, cfg.latency + late + self._rng.uniform(-cfg.jitter, cfg.jitter)))
        if cfg.error_rate and self._rng.random() < cfg.error_rate:
            answer = _json(
                status_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
            )
        elif cfg.empty_rate and self._rng.random() < cfg.empty_rate:
            answer = _raw(self._empty)
        else:
            answer = _raw(self._rng.choice(self._images))
        answer.headers[TIER_HEADER] = served
        return answer

    def stats(self) -> dict[str, Any]:
        """Counts per key (by safe label) and per project, and the peak number of calls in flight."""
        return {
            "keys": {label: asdict(s) for label, s in self._keys.values()},
            "projects": {name: self._project_stats(p) for name, p in self._projects.items()},
            "unknown_key_calls": self._unknown_keys,
            "in_flight": self._in_flight,
            "peak_concurrency": self._peak,
        }

    def _project_stats(self, p: _Project) -> dict[str, Any]:
        """One project's counts; its limits and window peaks at the first model served (the
        default model's limits before any call), each model's under `models`."""
        models = {name: q.stats() for name, q in p.models.items()}
        first = next(iter(models.values()), None) or ModelQuota(p.spec.limits(""), p.window, p.rpd).stats()
        return {
            **asdict(p.stats),
            "rpm": first["rpm"],
            "capacity": first["capacity"],
            "priority_capacity": first["priority_capacity"],
            "flex_capacity": first["flex_capacity"],
            "window_seconds": p.window,
            "rpd": p.rpd,
            "day_calls": sum(m["day_calls"] for m in models.values()),
            "max_window_calls": max((m["max_window_calls"] for m in models.values()), default=0),
            "max_priority_window_calls": max(
                (m["max_priority_window_calls"] for m in models.values()), default=0
            ),
            "models": models,
        }

    def reset(self) -> None:
        """Zero every count; the quotas keep what they have used."""
        for _, stats in self._keys.values():
            stats.calls = stats.ok = stats.throttled = stats.errors = 0
        for p in self._projects.values():
            p.stats = ProjectStats(in_flight=p.stats.in_flight)
            for quota in p.models.values():
                quota.reset()
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
        "@type": RPC_TYPE + "ErrorInfo",
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
