"""Submits (single and batch) are admitted from their headers, read whole, then handled a bounded
number at a time.

A burst of hundreds of submits, all handled at once on one event loop, interleaves their
steps so that every one of them finishes late (the first image waits for the last submit
to be parsed). Through this gate the first submits are queued within milliseconds and the
rest follow at the same total rate; reads, watchers and pages never wait on it.

Nothing a caller sends can hold a gate place without being admitted and without having
sent its whole body: the token and its role are checked from the headers alone, one token
may have only so many submits in the replica at once, and the body must arrive within a
deadline, and within its route's size limit, before the submit waits for a place. (The
token's submit rate is checked with the submit itself, in the store's one script call.)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.http.bodylimit import read_body
from serve_app.http.problems import ApiProblem, RequestTimeout, TooLarge, TooManyRequests, respond

SUBMIT_PATH = "/v1/tasks"
BATCH_PATH = "/v1/tasks/batch"


@dataclass(frozen=True, slots=True)
class Admitted:
    """Who a submit counts against (a token id, or "" for none) and how many it may have at once."""

    key: str
    cap: int


# Checks a submit from its headers: an Admitted, or raises an ApiProblem (401, 403, 503).
Admit = Callable[[Scope], Awaitable[Admitted]]


class SubmitGate:
    """ASGI middleware: `POST /v1/tasks` and `POST /v1/tasks/batch` are admitted by `admit`,
    their bodies read within `read_seconds` and at most `max_body_bytes` (a batch's at most
    `batch_body_bytes`), then at most `limit` run at once, first come first served."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        admit: Admit | None = None,
        read_seconds: float = 10.0,
        max_body_bytes: int = 30 * 1024 * 1024,
        batch_body_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.limit = limit
        self.admit = admit
        self.read_seconds = read_seconds
        self.max_body_bytes = max_body_bytes
        self._caps = {SUBMIT_PATH: max_body_bytes, BATCH_PATH: batch_body_bytes}
        self._slots: asyncio.Semaphore | None = None
        self._in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self._caps.get(scope["path"].rstrip("/")) if scope["type"] == "http" else None
        if cap is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # made on the serving loop
            self._slots = asyncio.Semaphore(self.limit)
        try:
            admitted = await self.admit(scope) if self.admit is not None else Admitted("", 0)
        except ApiProblem as exc:
            await _answer(exc, scope, receive, send)
            return
        key = admitted.key
        if admitted.cap and self._in_flight[key] >= admitted.cap:
            busy = TooManyRequests(
                f"this token already has {admitted.cap} submits in progress, its limit; "
                "wait for one to be answered",
                1,
            )
            await _answer(busy, scope, receive, send)
            return
        self._in_flight[key] += 1
        try:
            try:
                declared = Headers(scope=scope).get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise TooLarge(f"the body is {declared} bytes; the limit is {cap} bytes")
                replay = await self._read(receive, cap)
            except ApiProblem as exc:
                await _answer(exc, scope, receive, send, close=True)
                return
            async with self._slots:
                await self.app(scope, replay, send)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    async def _read(self, receive: Receive, cap: int) -> Receive:
        """The whole body, read within the deadline and `cap` bytes, as a replayable receive."""
        try:
            async with asyncio.timeout(self.read_seconds):
                return await read_body(receive, cap)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.read_seconds:g} s; send it whole and promptly"
            ) from None


async def _answer(exc: ApiProblem, scope: Scope, receive: Receive, send: Send, close: bool = False) -> None:
    """Send `exc` as problem+json; `close` ends the connection (its body was not read whole)."""
    response = respond(exc, scope.get("path", ""), {"Connection": "close"} if close else None)
    await response(scope, receive, send)
