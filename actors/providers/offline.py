"""The offline provider: no network; real images made with Pillow after a simulated latency."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable

from PIL import Image, UnidentifiedImageError

from actors.config import STANDARD, ProviderConfig, Secret
from actors.providers import images
from actors.providers.base import INPUT_ROLES, ImageRequest, ImageResult, ProviderError, hold_until


class OfflineProvider:
    """Stands in for an image model: a styled portrait, or the garment composited on the person."""

    def __init__(self, config: ProviderConfig, rng: random.Random | None = None) -> None:
        self._latency = config.latency_seconds
        self._jitter = config.latency_jitter
        self._rng = rng or random.Random()
        self._size = images.SIZES[config.image_size]
        self._stock = b"" if config.render else images.stock_png(self._size)

    def prepare(self, keys: Iterable[Secret]) -> None:
        """Nothing to set up: no clients, no network."""

    async def start(self) -> None:
        """Nothing to start."""

    def latency(self) -> float:
        """One simulated call duration: the latency plus or minus up to the jitter."""
        return max(0.0, self._latency + self._rng.uniform(-self._jitter, self._jitter))

    async def generate(
        self,
        request: ImageRequest,
        key: Secret,
        on_sent: Callable[[float], None] | None = None,
        not_before: float = 0.0,
        tier: str = STANDARD,
    ) -> ImageResult:
        """Render in a thread while the simulated latency runs; the call lasts the longer of the two.

        Without rendering (`render = false`), the stock image after the latency. Every tier
        is served as asked."""
        await hold_until(not_before)
        if on_sent is not None:
            on_sent(time.time())
        if self._stock:
            needed = INPUT_ROLES.get(request.kind, ("person",))
            if missing := [role for role in needed if role not in request.images]:
                raise ProviderError(f"missing input image {missing[0]!r}", retryable=False)
            await asyncio.sleep(self.latency())
            return ImageResult(data=self._stock, mime_type="image/png", service_tier=tier)
        render = asyncio.to_thread(self._render, request)
        _, data = await asyncio.gather(asyncio.sleep(self.latency()), render)
        return ImageResult(data=data, mime_type="image/png", service_tier=tier)

    def _render(self, request: ImageRequest) -> bytes:
        try:
            if request.kind == "fitting":
                return images.try_on(
                    request.images["person"], request.images["garment"], request.prompt, self._size
                )
            return images.portrait(request.images["person"], request.prompt, self._size)
        except KeyError as exc:
            raise ProviderError(f"missing input image {exc}", retryable=False) from exc
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ProviderError(f"input image could not be processed: {exc}", retryable=False) from exc
