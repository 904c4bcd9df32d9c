"""Submits (single and batch) are admitted from their headers, read whole, then handled a bounded
number at a time.

A burst of hundreds of submits, all handled at once on one event loop, interleaves their
steps so that every one of them finishes late (the first image waits for the last submit
to be parsed). Through this gate the first submits are queued within milliseconds and the
rest follow at the same total rate; reads, watchers and pages never wait on it.

With `[[lanes]]`, submits wait for a place by priority lane (`Places`): a place that frees goes
to the waiting lane furthest below its weight's share of the places in use, first come first
served inside a lane. So a paid user's submit is not queued behind a free flood at the door
too: it enters at the next free place while the flood's submits take their turn.

Nothing a caller sends can hold a gate place without being admitted and without having
sent its whole body: the token and its role are checked from the headers alone, one token
may have only so many submits in the replica at once, and the body must arrive within a
deadline, and within its route's size limit, before the submit waits for a place. (The
token's submit rate is checked with the submit itself, in the store's one script call.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import msgspec
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.config import next_lane
from serve_app.http.bodylimit import read_messages, replay_of
from serve_app.http.problems import ApiProblem, RequestTimeout, TooLarge, TooManyRequests, respond

SUBMIT_PATH = "/v1/tasks"
BATCH_PATH = "/v1/tasks/batch"


@dataclass(frozen=True, slots=True)
class Admitted:
    """Who a submit counts against (a token id, or "" for none) and how many it may have at once;
    the lane its token rides, and whether its body may name another (a service's or an admin's)."""

    key: str
    cap: int
    lane: str = ""
    names_lane: bool = False


# Checks a submit from its headers: an Admitted, or raises an ApiProblem (401, 403, 503).
Admit = Callable[[Scope], Awaitable[Admitted]]


class _LaneField(msgspec.Struct):
    """The one field of a JSON submit body the gate reads."""

    lane: str | None = None


_read_lane = msgspec.json.Decoder(_LaneField).decode


def body_lane(messages: list[Message], lanes: Mapping[str, float]) -> str | None:
    """The configured lane a JSON submit body names, or None (none named, not one of `lanes`, or
    not a JSON object: the route answers what is wrong with it)."""
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    try:
        lane = _read_lane(body).lane
    except (msgspec.DecodeError, RecursionError):  # not JSON, `lane` not text, nested too deep
        return None
    return lane if lane in lanes else None


class Places:
    """At most `limit` holders at once. A place that frees goes to the waiting lane furthest below
    its weight's share of the places held (`next_lane`; a lane not in `weights` weighs 1), and
    inside a lane to the first that came: with one lane, a first-come-first-served semaphore."""

    def __init__(self, limit: int, weights: Mapping[str, float] | None = None) -> None:
        self._limit = limit
        self._weights = dict(weights or {})
        self._held: Counter[str] = Counter()
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def held(self) -> dict[str, int]:
        """The places held, by lane."""
        return dict(self._held)

    def waiting(self) -> dict[str, int]:
        """The holders waiting for a place, by lane."""
        return {lane: len(queue) for lane, queue in self._waiting.items()}

    @contextlib.asynccontextmanager
    async def place(self, lane: str) -> AsyncIterator[None]:
        """Hold a place for `lane` while inside."""
        await self._enter(lane)
        try:
            yield
        finally:
            self._leave(lane)

    async def _enter(self, lane: str) -> None:
        if not self._waiting and self._held.total() < self._limit:
            self._held[lane] += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(lane, deque())
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():  # still waiting (or passed over since): leave the line
                if future in queue:
                    queue.remove(future)
                if not queue and self._waiting.get(lane) is queue:
                    del self._waiting[lane]
            else:  # given a place as it was cancelled: hand it on
                self._leave(lane)
            raise

    def _leave(self, lane: str) -> None:
        self._held[lane] -= 1
        if self._held[lane] <= 0:
            del self._held[lane]
        while self._waiting and self._held.total() < self._limit:
            chosen = next_lane(self._weights, self._held, self._waiting)
            queue = self._waiting[chosen]
            future = queue.popleft()
            if not queue:
                del self._waiting[chosen]
            if future.done():  # cancelled while it waited: its task is leaving
                continue
            self._held[chosen] += 1
            future.set_result(None)


class SubmitGate:
    """ASGI middleware: `POST /v1/tasks` and `POST /v1/tasks/batch` are admitted by `admit`,
    their bodies read within `read_seconds` and at most `max_body_bytes` (a batch's at most
    `batch_body_bytes`), then at most `limit` run at once (`Places`: first come first served
    inside a lane, lanes by `lanes`' weights). A submit waits in its token's lane, or in the lane
    a service's or an admin's JSON body names (a multipart body's or a batch's: its token's)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        admit: Admit | None = None,
        read_seconds: float = 10.0,
        max_body_bytes: int = 30 * 1024 * 1024,
        batch_body_bytes: int = 128 * 1024 * 1024,
        lanes: Mapping[str, float] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.lanes = dict(lanes or {})
        self.admit = admit
        self.read_seconds = read_seconds
        self.max_body_bytes = max_body_bytes
        self._caps = {SUBMIT_PATH: max_body_bytes, BATCH_PATH: batch_body_bytes}
        self._places = Places(limit, self.lanes)
        self._in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self._caps.get(scope["path"].rstrip("/")) if scope["type"] == "http" else None
        if cap is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
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
                messages = await self._read(receive, cap)
            except ApiProblem as exc:
                await _answer(exc, scope, receive, send, close=True)
                return
            lane = admitted.lane
            if admitted.names_lane and len(self.lanes) > 1 and scope["path"].rstrip("/") == SUBMIT_PATH:
                lane = body_lane(messages, self.lanes) or lane
            async with self._places.place(lane):
                await self.app(scope, replay_of(messages, receive), send)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    async def _read(self, receive: Receive, cap: int) -> list[Message]:
        """The whole body's messages, read within the deadline and `cap` bytes."""
        try:
            async with asyncio.timeout(self.read_seconds):
                return await read_messages(receive, cap)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.read_seconds:g} s; send it whole and promptly"
            ) from None


async def _answer(exc: ApiProblem, scope: Scope, receive: Receive, send: Send, close: bool = False) -> None:
    """Send `exc` as problem+json; `close` ends the connection (its body was not read whole)."""
    response = respond(exc, scope.get("path", ""), {"Connection": "close"} if close else None)
    await response(scope, receive, send)
