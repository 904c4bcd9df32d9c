"""Tests for the offline provider's pure Pillow image functions."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image, ImageChops, ImageStat

from actors.providers.images import portrait, sample_garment, sample_selfie, try_on

W, H = 768, 1024
TORSO = (round(W * 0.3), round(H * 0.4), round(W * 0.7), round(H * 0.6))


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.format == "PNG"
        return im.convert("RGB")


def _encode(data: bytes, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    _open(data).save(buf, format=fmt, **params)
    return buf.getvalue()


def _mean_diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_portrait_is_768x1024_png_and_depends_on_prompt() -> None:
    """Portrait output is a 768x1024 PNG and two prompts give visibly different images."""
    selfie = sample_selfie(1)
    a = _open(portrait(selfie, "a cosy autumn portrait"))
    b = _open(portrait(selfie, "a neon cyberpunk portrait"))
    assert a.size == b.size == (W, H)
    assert _mean_diff(a, b) > 1.0


def test_portrait_is_deterministic() -> None:
    """The same selfie and prompt always give byte-identical output."""
    selfie = sample_selfie(2)
    assert portrait(selfie, "studio") == portrait(selfie, "studio")


@pytest.mark.parametrize(("fmt", "params"), [("JPEG", {"quality": 90}), ("WEBP", {})])
def test_portrait_accepts_jpeg_and_webp(fmt: str, params: dict[str, object]) -> None:
    """Portrait decodes JPEG and WebP selfies and still returns a 768x1024 PNG."""
    data = _encode(sample_selfie(3), fmt, **params)
    with Image.open(io.BytesIO(data)) as src:
        assert src.format == fmt
    assert _open(portrait(data, "film")).size == (W, H)


def test_portrait_honours_exif_orientation() -> None:
    """A rotated image tagged with EXIF orientation 6 renders like the upright original."""
    upright = _open(sample_selfie(4))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format="PNG", exif=exif.tobytes())
    upright_buf = io.BytesIO()
    upright.save(upright_buf, format="PNG")
    assert portrait(buf.getvalue(), "x") == portrait(upright_buf.getvalue(), "x")


def test_portrait_crops_any_shape_to_portrait() -> None:
    """Landscape and tiny inputs are cropped and resized to 768x1024."""
    for size in [(1600, 900), (3, 2), (200, 1200)]:
        buf = io.BytesIO()
        Image.new("RGB", size, (120, 80, 40)).save(buf, format="PNG")
        assert _open(portrait(buf.getvalue(), "wide")).size == (W, H)


def test_try_on_shows_garment_on_torso_only() -> None:
    """The garment visibly changes the torso region and leaves the top of the image alone."""
    person = sample_selfie(5)
    blank = io.BytesIO()
    Image.new("RGB", (400, 400), "white").save(blank, format="PNG")
    plain = _open(try_on(person, blank.getvalue(), "nothing"))
    dressed = _open(try_on(person, sample_garment(6), "wear this"))
    assert dressed.size == plain.size == (W, H)
    assert _mean_diff(dressed.crop(TORSO), plain.crop(TORSO)) > 20.0
    head_band = (0, 0, W, round(H * 0.25))
    assert _mean_diff(dressed.crop(head_band), plain.crop(head_band)) == 0.0


def test_try_on_differs_from_portrait_torso() -> None:
    """The try-on torso region differs from the plain styled portrait of the same person."""
    person = sample_selfie(7)
    dressed = _open(try_on(person, sample_garment(8), "t-shirt"))
    styled = _open(portrait(person, "t-shirt"))
    assert dressed.size == (W, H)
    assert _mean_diff(dressed.crop(TORSO), styled.crop(TORSO)) > 20.0


def test_try_on_garment_background_is_removed() -> None:
    """The garment's white background does not appear on the person outside the shirt."""
    person = sample_selfie(9)
    dressed = _open(try_on(person, sample_garment(10), "x"))
    blank = io.BytesIO()
    Image.new("RGB", (400, 400), "white").save(blank, format="PNG")
    plain = _open(try_on(person, blank.getvalue(), "x"))
    # Left of the scaled garment (which spans the middle 55% of the width) nothing changes.
    side = (0, round(H * 0.3), round(W * 0.2), H)
    assert _mean_diff(dressed.crop(side), plain.crop(side)) == 0.0


@pytest.mark.parametrize(("fn", "size"), [(sample_selfie, (480, 640)), (sample_garment, (400, 400))])
def test_samples_deterministic_per_seed_and_vary_across_seeds(
    fn: Callable[[int], bytes], size: tuple[int, int]
) -> None:
    """Sample images are valid PNGs of fixed size, equal for a seed and different across seeds."""
    first = [fn(seed) for seed in range(4)]
    assert first == [fn(seed) for seed in range(4)]
    assert len(set(first)) == 4
    for data in first:
        assert _open(data).size == size


def test_sample_garment_has_white_corners() -> None:
    """Sample garments sit on a plain white background."""
    im = _open(sample_garment(11))
    for xy in [(0, 0), (399, 0), (0, 399), (399, 399)]:
        assert im.getpixel(xy) == (255, 255, 255)


def test_offline_provider_without_render_answers_the_stock_png_of_its_size() -> None:
    """`render = false`: every call gets the same PNG of the configured size, and a missing
    input is still a permanent failure."""
    import asyncio

    from actors.config import ProviderConfig, Secret
    from actors.providers.base import ImageRequest, ProviderError
    from actors.providers.offline import OfflineProvider

    provider = OfflineProvider(
        ProviderConfig(latency_seconds=0, latency_jitter=0, image_size="512", render=False)
    )
    key = Secret("k")
    a = asyncio.run(
        provider.generate(ImageRequest("t1", "photography", "p", {"person": sample_selfie(1)}), key)
    )
    b = asyncio.run(
        provider.generate(ImageRequest("t2", "photography", "q", {"person": sample_selfie(2)}), key)
    )
    assert a.data == b.data and _open(a.data).size == (384, 512)
    with pytest.raises(ProviderError, match="garment") as info:
        asyncio.run(provider.generate(ImageRequest("t3", "fitting", "p", {"person": sample_selfie(1)}), key))
    assert not info.value.retryable
