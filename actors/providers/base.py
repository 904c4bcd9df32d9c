"""The provider interface: one request in, one image out, or a sorted failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from actors.config import STANDARD, Secret
from events.errors import GenqueueError

# The input images each kind of task sends upstream, in order.
INPUT_ROLES: dict[str, tuple[str, ...]] = {"photography": ("person",), "fitting": ("person", "garment")}


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What a provider needs for one image."""

    task_id: str
    kind: str
    prompt: str
    images: dict[str, bytes]
    options: dict[str, Any] = field(default_factory=dict)
    model: str = ""  # the model to call ("": the provider's configured one)


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One generated image, and the service tier upstream says served its call ("": not told)."""

    data: bytes
    mime_type: str
    service_tier: str = ""


class Failure(StrEnum):
    """What a failed upstream call means, and so what genqueue does about it."""

    TRANSIENT = "transient"  # 5xx, timeout, connection error: retry the task with backoff
    PERMANENT = "permanent"  # bad input, a 200 without an image: fail the task
    THROTTLED = "throttled"  # 429 per-minute quota: cool the pool down; the task keeps its place
    QUOTA_DAY = "quota_day"  # 429 per-day quota: park the pool until midnight Pacific
    KEY_REJECTED = "key_rejected"  # 400 API_KEY_INVALID, 401, 403: disable the key
    MODEL_GONE = "model_gone"  # 404: the model id is retired; fail the task and alert


class ProviderError(GenqueueError):
    """A provider call ended without an image; `failure` says what it means.

    `retry_after` is upstream's own wait (RetryInfo), `quota_id` and `quota_value` name the
    limit a 429 hit; none of them ever holds a key.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool = False,
        code: int = 0,
        failure: Failure | None = None,
        retry_after: float | None = None,
        quota_id: str = "",
        quota_value: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = (
            failure if failure is not None else (Failure.TRANSIENT if retryable else Failure.PERMANENT)
        )
        self.code = code  # the upstream HTTP status, 0 when there was none
        self.retry_after = retry_after
        self.quota_id = quota_id
        self.quota_value = quota_value

    @property
    def retryable(self) -> bool:
        """Whether another attempt of the task may help (throttling is not an attempt's failure)."""
        return self.failure is Failure.TRANSIENT

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_provider_error,
            (self.reason, self.failure.value, self.code, self.retry_after, self.quota_id, self.quota_value),
        )


def _rebuild_provider_error(
    reason: str, failure: str, code: int, retry_after: float | None, quota_id: str, quota_value: int | None
) -> ProviderError:
    return ProviderError(
        reason,
        code=code,
        failure=Failure(failure),
        retry_after=retry_after,
        quota_id=quota_id,
        quota_value=quota_value,
    )


class Provider(Protocol):
    """Makes one image per call."""

    def prepare(self, keys: Iterable[Secret]) -> None:
        """Note the keys that calls will use."""
        ...

    async def start(self) -> None:
        """Set up, on the loop that will call, what each key needs (clients, connections)."""
        ...

    async def generate(
        self,
        request: ImageRequest,
        key: Secret,
        on_sent: Callable[[float], None] | None = None,
        not_before: float = 0.0,
        tier: str = STANDARD,
    ) -> ImageResult:
        """The image for `request`, using upstream key `key`; raises ProviderError.

        `on_sent(at)`: the request left for upstream at `at` (epoch seconds). `not_before`:
        the request is built but goes out no earlier than this (epoch seconds), when its
        rate-limit place frees. `tier`: the service tier the call asks for (its pool's)."""
        ...


async def hold_until(at: float) -> None:
    """Wait until epoch time `at` (at once if it has passed)."""
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
