"""The provider interface: one request in, one image out, or a sorted failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from actors.config import Secret
from events.errors import GenqueueError


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What a provider needs for one image."""

    task_id: str
    kind: str
    prompt: str
    images: dict[str, bytes]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One generated image."""

    data: bytes
    mime_type: str


class ProviderError(GenqueueError):
    """A provider call ended without an image; `retryable` says whether another try may help."""

    def __init__(self, reason: str, *, retryable: bool, code: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.code = code  # the upstream HTTP status, 0 when there was none

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_provider_error, (self.reason, self.retryable, self.code))


def _rebuild_provider_error(reason: str, retryable: bool, code: int) -> ProviderError:
    return ProviderError(reason, retryable=retryable, code=code)


class Provider(Protocol):
    """Makes one image per call."""

    async def generate(self, request: ImageRequest, key: Secret) -> ImageResult:
        """The image for `request`, using upstream key `key`; raises ProviderError."""
        ...
