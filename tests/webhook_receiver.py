"""A real webhook receiver for tests and benchmarks: aiohttp on 127.0.0.1, in a thread of its own.

It checks every request's Standard Webhooks signature against the secrets it was given and
answers each webhook id's n-th request with the n-th code planned for its path (200 once
the plan runs out, or 503 while the path is `down`). It may listen on another loopback
address, on a given port, or behind TLS.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True, slots=True)
class Hit:
    """One request the receiver got, and what it answered."""

    path: str
    webhook_id: str
    verified: bool
    body: dict[str, Any]
    answered: int
    at: float
    host: str = ""  # the Host header


@dataclass
class Receiver:
    """Start with `with Receiver() as r:`; `r.url("/path")` is where to send webhooks."""

    secrets: list[str] = field(default_factory=list)
    codes: dict[str, list[int]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    hits: list[Hit] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = defaultdict(int)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="receiver", daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        """The URL of `path` on this receiver."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{path}"

    def _verified(self, raw: str, headers: dict[str, str]) -> bool:
        for secret in self.secrets:
            try:
                Webhook(secret).verify(raw, headers)
                return True
            except WebhookVerificationError:
                continue
        return False

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.text()
        headers = dict(request.headers)
        msg_id = request.headers.get("webhook-id", "")
        path = request.path
        with self._lock:
            n = self._seen[(path, msg_id)]
            self._seen[(path, msg_id)] += 1
            plan = self.codes.get(path, [])
            code = 503 if path in self.down else (plan[n] if n < len(plan) else 200)
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            verified = self._verified(raw, headers)
            self.hits.append(Hit(path, msg_id, verified, body, code, time.time(), request.host))
        return web.Response(status=code, text="ok" if code < 300 else "not now")

    def snapshot(self) -> list[Hit]:
        """A copy of the hits so far."""
        with self._lock:
            return list(self.hits)

    def by_id(self, path: str | None = None) -> dict[str, list[Hit]]:
        """Hits grouped by webhook id (of one path, or all)."""
        grouped: dict[str, list[Hit]] = defaultdict(list)
        for hit in self.snapshot():
            if path is None or hit.path == path:
                grouped[hit.webhook_id].append(hit)
        return dict(grouped)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, ssl_context=self.tls).start()

    def __enter__(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
