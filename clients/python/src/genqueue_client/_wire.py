"""What the sync and async clients share: requests as genqueue takes them, answers read, and the
count of a request's tries."""

from __future__ import annotations

import base64
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
from httpx_sse import ServerSentEvent

from genqueue_client.errors import ConnectionFailed, GenqueueError, error_for
from genqueue_client.models import Submitted, TaskView, Update
from genqueue_client.retry import Retries

VERSION = "0.1.0"
USER_AGENT = f"genqueue-client/{VERSION}"
# The server sends a comment every 15 s on a quiet stream: this long without a byte, it is dead.
STREAM_SILENCE_SECONDS = 60.0

Image = bytes | str | os.PathLike[str]
"""An input image: its bytes (PNG, JPEG or WebP), or the path of its file."""

IfLate = Literal["refuse", "accept"]
"""What a submit asks for when its ETA already misses its deadline: a refusal, or the task anyway."""


def headers(token: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers every request carries."""
    out = {"User-Agent": USER_AGENT, "Accept": "application/json", **(extra or {})}
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def timeout_of(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """An httpx timeout from seconds (each of connect, read, write and pool) or itself."""
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def stream_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    """The timeout of a watch stream: as the client's, but a read may wait for the keep-alive."""
    return httpx.Timeout(
        connect=timeout.connect,
        read=max(timeout.read or 0.0, STREAM_SILENCE_SECONDS),
        write=timeout.write,
        pool=timeout.pool,
    )


def image_bytes(value: Image) -> bytes:
    """An image's bytes: as given, or read from its file."""
    return value if isinstance(value, bytes) else Path(value).read_bytes()


def new_key() -> str:
    """A fresh idempotency key, made once per submit and sent with each of its tries."""
    return uuid.uuid4().hex


def submit_body(
    kind: str,
    images: Mapping[str, bytes],
    prompt: str,
    *,
    user_id: str | None,
    webhook_url: str | None,
    aspect_ratio: str | None,
    seed: int | None,
    deadline_seconds: float | None = None,
    if_late: IfLate | None = None,
    max_price: int | None = None,
    lane: str | None = None,
) -> dict[str, Any]:
    """The JSON body of `POST /v1/tasks`: the images base64, fields left out when not given."""
    body: dict[str, Any] = {
        "kind": kind,
        "prompt": prompt,
        "images": {role: base64.b64encode(data).decode("ascii") for role, data in images.items()},
    }
    options = {k: v for k, v in (("aspect_ratio", aspect_ratio), ("seed", seed)) if v is not None}
    if options:
        body["options"] = options
    if user_id is not None:
        body["user_id"] = user_id
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    if deadline_seconds is not None:
        body["deadline_seconds"] = deadline_seconds
    if if_late is not None:
        body["if_late"] = if_late
    if max_price is not None:
        body["max_price"] = max_price
    if lane is not None:
        body["lane"] = lane
    return body


def json_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON object a success carries; a GenqueueError when it carries something else."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GenqueueError(
            f"{response.request.method} {response.request.url.path} answered {response.status_code} "
            "without a JSON object: is this a genqueue instance?",
            status=response.status_code,
        )
    return body


def submitted(response: httpx.Response, key: str) -> Submitted:
    """The answer to a submit sent with idempotency key `key`."""
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    return Submitted.from_json(json_of(response), key, replayed)


def no_answer(exc: Exception, method: str, path: str) -> ConnectionFailed:
    """The error of a request that got no answer, caused by `exc`."""
    error = ConnectionFailed(f"{method} {path}: no answer ({type(exc).__name__}: {exc})")
    error.__cause__ = exc
    return error


def check(response: httpx.Response) -> httpx.Response:
    """The response if it is a success; its problem as an error otherwise (the body read)."""
    if response.is_success:
        return response
    raise error_for(response)


def update_of(message: ServerSentEvent) -> Update | None:
    """A watch stream's message as an update; None for what is not a task message (httpx-sse
    also reports a keep-alive comment after the first message as a message without data)."""
    if message.event != "task" or not message.data:
        return None
    try:
        body = json.loads(message.data)
    except ValueError as exc:
        raise GenqueueError(f"an unreadable watch message ({exc}): {message.data[:80]!r}") from None
    return Update(id=message.id, view=TaskView.from_json(body))


class Attempts:
    """The tries of one request (or one watch stream since its last message): how long to wait
    before the next, or the error to raise."""

    def __init__(
        self,
        policy: Retries,
        clock: Callable[[], float] = time.monotonic,
        unit: Callable[[], float] = random.random,
    ) -> None:
        self._policy, self._clock, self._unit = policy, clock, unit
        self.tried = 0
        self._began = clock()

    def reset(self) -> None:
        """Start counting again: the request made progress (a stream delivered a message)."""
        self.tried, self._began = 0, self._clock()

    def after(self, error: GenqueueError) -> float:
        """The wait before the next try after one failed with `error`; raises `error` when
        the policy gives up."""
        self.tried += 1
        wait = self._policy.wait(error, self.tried, self._clock() - self._began, self._unit())
        if wait is None:
            raise error
        return wait
