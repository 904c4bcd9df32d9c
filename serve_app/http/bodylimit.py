"""A request body over the size limit is refused with a 413 before it is read whole.

A declared Content-Length over the limit is answered at once, without reading the body
(the server enforces the declared length). A body without one (chunked) is read here as it
streams in, and refused as soon as it passes the limit; one within it is handed on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.http.problems import PROBLEM, TooLarge


class BodyLimit:
    """ASGI middleware refusing request bodies larger than `max_bytes`, or than a path's own
    limit in `paths` (a batch submit's is larger)."""

    def __init__(self, app: ASGIApp, max_bytes: int, paths: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = dict(paths or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.paths.get(scope.get("path", ""), self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, f"the body is {declared} bytes; the limit is {limit} bytes")
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        try:
            replay = await read_body(receive, limit)
        except TooLarge:
            await self._refuse(scope, send, f"the body is larger; the limit is {limit} bytes")
            return
        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, detail: str) -> None:
        body = json.dumps(
            {
                "type": TooLarge.type_uri,
                "title": TooLarge.title,
                "status": 413,
                "detail": detail,
                "instance": scope.get("path", ""),
            }
        ).encode()
        headers: list[Any] = [
            (b"content-type", PROBLEM.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, max_bytes: int) -> Receive:
    """The whole request body, as a receive that replays it; TooLarge once it passes `max_bytes`."""
    return replay_of(await read_messages(receive, max_bytes), receive)


async def read_messages(receive: Receive, max_bytes: int) -> list[Message]:
    """The whole request body's messages; TooLarge once it passes `max_bytes`."""
    messages: list[Message] = []
    seen = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        seen += len(message.get("body", b""))
        if seen > max_bytes:
            raise TooLarge(f"the body is larger than the limit of {max_bytes} bytes")
        if not message.get("more_body", False):
            break
    return messages


def replay_of(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives `messages` again, then goes on with `receive`."""
    pending = iter(messages)

    async def replay() -> Message:
        return next(pending, None) or await receive()

    return replay


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
