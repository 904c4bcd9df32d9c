"""The offline provider: no network; real images made with Pillow after a simulated latency."""

from __future__ import annotations

import asyncio
import random

from PIL import UnidentifiedImageError

from actors.config import ProviderConfig, Secret
from actors.providers import images
from actors.providers.base import ImageRequest, ImageResult, ProviderError


class OfflineProvider:
    """Stands in for an image model: a styled portrait, or the garment composited on the person."""

    def __init__(self, config: ProviderConfig, rng: random.Random | None = None) -> None:
        self._latency = config.latency_seconds
        self._jitter = config.latency_jitter
        self._rng = rng or random.Random()

    def latency(self) -> float:
        """One simulated call duration: the latency plus or minus up to the jitter."""
        return max(0.0, self._latency + self._rng.uniform(-self._jitter, self._jitter))

    async def generate(self, request: ImageRequest, key: Secret) -> ImageResult:
        """Wait the simulated latency, then render the image in a thread."""
        await asyncio.sleep(self.latency())
        try:
            if request.kind == "fitting":
                data = await asyncio.to_thread(
                    images.try_on,
                    request.images["person"],
                    request.images["garment"],
                    request.prompt,
                )
            else:
                data = await asyncio.to_thread(
                    images.portrait, request.images["person"], request.prompt
                )
        except KeyError as exc:
            raise ProviderError(f"missing input image {exc}", retryable=False) from exc
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ProviderError(
                f"input image could not be processed: {exc}", retryable=False
            ) from exc
        return ImageResult(data=data, mime_type="image/png")
