"""Submits are handled a bounded number at a time, in the order they arrive.

A burst of hundreds of submits, all handled at once on one event loop, interleaves their
steps so that every one of them finishes late (the first image waits for the last submit
to be parsed). Through this gate the first submits are queued within milliseconds and the
rest follow at the same total rate; reads, watchers and pages never wait on it.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send


class SubmitGate:
    """ASGI middleware: at most `limit` `POST /v1/tasks` at once; the rest wait, first come first served."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != "/v1/tasks":
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # made on the serving loop
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            await self.app(scope, receive, send)
