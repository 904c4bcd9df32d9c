"""Pure Pillow image work for the offline provider: styled portraits, try-ons, synthetic samples."""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import random
from collections.abc import Callable

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps

# Output sizes by Gemini's image_size names, portrait 3:4.
SIZES: dict[str, tuple[int, int]] = {"512": (384, 512), "1K": (768, 1024), "2K": (1536, 2048)}
_SIZE = SIZES["1K"]
_LANCZOS = Image.Resampling.LANCZOS
_Style = Callable[[Image.Image], Image.Image]


def _lut(scale: float, offset: float) -> list[int]:
    return [max(0, min(255, round(v * scale + offset))) for v in range(256)]


def _tone(im: Image.Image, r: tuple[float, float], b: tuple[float, float]) -> Image.Image:
    red, green, blue = im.split()
    return Image.merge("RGB", (red.point(_lut(*r)), green, blue.point(_lut(*b))))


def _warm_film(im: Image.Image) -> Image.Image:
    out = _tone(im, (1.08, 12.0), (0.82, 0.0))
    return ImageEnhance.Color(ImageEnhance.Contrast(out).enhance(0.9)).enhance(1.1)


def _cool_cinematic(im: Image.Image) -> Image.Image:
    out = _tone(im, (0.86, 0.0), (1.08, 14.0))
    return ImageEnhance.Color(ImageEnhance.Contrast(out).enhance(1.2)).enhance(0.85)


def _mono_contrast(im: Image.Image) -> Image.Image:
    gray = ImageOps.autocontrast(ImageOps.grayscale(im), cutoff=2)
    return ImageEnhance.Contrast(gray).enhance(1.4).convert("RGB")


def _soft_pastel(im: Image.Image) -> Image.Image:
    out = ImageEnhance.Color(im).enhance(0.55).filter(ImageFilter.SMOOTH_MORE)
    white = Image.new("RGB", im.size, "white")
    return Image.blend(ImageEnhance.Brightness(out).enhance(1.08), white, 0.18)


_STYLES: tuple[tuple[_Style, tuple[int, int, int]], ...] = (
    (_warm_film, (92, 58, 30)),
    (_cool_cinematic, (24, 40, 56)),
    (_mono_contrast, (20, 20, 20)),
    (_soft_pastel, (236, 224, 232)),
)


def _open(data: bytes) -> Image.Image:
    """Decode bytes, apply EXIF orientation, flatten any alpha onto white, return RGB."""
    with Image.open(io.BytesIO(data)) as src:
        im = ImageOps.exif_transpose(src)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        if not has_alpha:
            return im.convert("RGB")
        im = im.convert("RGBA")
    canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
    canvas.alpha_composite(im)
    return canvas.convert("RGB")


def _fit(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return ImageOps.fit(im, size, Image.Resampling.BICUBIC, centering=(0.5, 0.4))


def _png(im: Image.Image) -> bytes:
    # Fast zlib level: the encoder dominated the render time at the default level.
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@functools.lru_cache(maxsize=4)
def _vignette_mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", (96, 128), 0)
    ImageDraw.Draw(mask).ellipse((6, 6, 90, 122), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(12)).resize(size, Image.Resampling.BILINEAR)


def _vignette(im: Image.Image, depth: float) -> Image.Image:
    return Image.composite(im, ImageEnhance.Brightness(im).enhance(1.0 - depth), _vignette_mask(im.size))


def portrait(selfie: bytes, prompt: str, size: tuple[int, int] = _SIZE) -> bytes:
    """Crop a selfie to a portrait of `size` (768x1024) and apply a look chosen by the prompt's hash; PNG."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    style, frame = _STYLES[digest[0] % len(_STYLES)]
    base = _fit(_open(selfie), size)
    strength = 0.7 + 0.3 * digest[1] / 255
    out = _vignette(Image.blend(base, style(base), strength), 0.25 + 0.2 * digest[2] / 255)
    w, h = out.size
    ImageDraw.Draw(out).rectangle((8, 8, w - 9, h - 9), outline=frame, width=4)
    return _png(out)


def _cutout(garment: bytes) -> Image.Image:
    """Make pixels near the corner colour transparent (feathered) and trim to the garment."""
    with Image.open(io.BytesIO(garment)) as src:
        im = ImageOps.exif_transpose(src).convert("RGBA")
    rgb = im.convert("RGB")
    w, h = rgb.size
    corners = [rgb.getpixel(p) for p in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    chans = [sorted(int(c[i]) for c in corners if isinstance(c, tuple)) for i in range(3)]
    key = tuple((s[1] + s[2]) // 2 for s in chans)  # per-channel median of the four corners
    diff = ImageChops.difference(rgb, Image.new("RGB", rgb.size, key))
    dr, dg, db = diff.split()
    dist = ImageChops.lighter(ImageChops.lighter(dr, dg), db)
    ramp = [0 if v <= 24 else 255 if v >= 48 else round((v - 24) * 255 / 24) for v in range(256)]
    alpha = dist.point(ramp).filter(ImageFilter.GaussianBlur(1.5))
    im.putalpha(ImageChops.multiply(alpha, im.getchannel("A")))
    box = im.getchannel("A").point(_lut(1.0, -8.0)).getbbox()
    return im.crop(box) if box else im.crop((0, 0, 0, 0))


def try_on(person: bytes, garment: bytes, prompt: str, size: tuple[int, int] = _SIZE) -> bytes:
    """Composite the background-removed garment over the person's torso (PNG of `size`, 768x1024).

    `prompt` is accepted for parity with the model-backed provider; the offline composite
    does not use it.
    """
    base = _fit(_open(person), size).convert("RGBA")
    piece = _cutout(garment)
    if piece.width and piece.height:
        w = round(size[0] * 0.55)
        h = max(1, round(piece.height * w / piece.width))
        top = round(size[1] * 0.30)
        piece = piece.resize((w, h), _LANCZOS).crop((0, 0, w, min(h, size[1] - top)))
        base.alpha_composite(piece, ((size[0] - w) // 2, top))
    return _png(base.convert("RGB"))


def _rgb(rng: random.Random, sat: tuple[float, float], val: tuple[float, float]) -> tuple[int, ...]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return tuple(round(c * 255) for c in (r, g, b))


def sample_selfie(seed: int) -> bytes:
    """A synthetic, person-like 480x640 PNG whose colours are drawn from `random.Random(seed)`."""
    rng = random.Random(seed)
    top, bottom = _rgb(rng, (0.1, 0.5), (0.5, 0.95)), _rgb(rng, (0.1, 0.5), (0.3, 0.8))
    grad = Image.linear_gradient("L").resize((480, 640))
    im = Image.composite(Image.new("RGB", grad.size, bottom), Image.new("RGB", grad.size, top), grad)
    skin = tuple(
        max(0, min(255, c + rng.randint(-12, 12)))
        for c in rng.choice(
            [
                (255, 219, 172),
                (241, 194, 125),
                (224, 172, 105),
                (198, 134, 66),
                (141, 85, 36),
                (92, 58, 34),
            ]
        )
    )
    hair = _rgb(rng, (0.2, 0.7), (0.05, 0.45))
    shirt = _rgb(rng, (0.3, 0.9), (0.3, 0.9))
    d = ImageDraw.Draw(im)
    d.ellipse((160, 30, 320, 175), fill=hair)
    d.rectangle((214, 190, 266, 250), fill=skin)
    d.rounded_rectangle((60, 228, 420, 760), radius=110, fill=shirt)
    d.ellipse((172, 45, 308, 215), fill=skin)
    d.chord((165, 38, 315, 160), 180, 360, fill=hair)
    eye = _rgb(rng, (0.3, 0.8), (0.15, 0.5))
    for x in (212, 268):
        d.ellipse((x - 13, 121, x + 13, 135), fill=(250, 250, 250))
        d.ellipse((x - 6, 122, x + 6, 134), fill=eye)
    d.line((240, 138, 235, 160, 244, 160), fill=tuple(max(0, c - 40) for c in skin), width=3)
    d.arc((212, 158, 268, 190), 20, 160, fill=(150, 60, 60), width=4)
    return _png(im.filter(ImageFilter.SMOOTH))


@functools.lru_cache(maxsize=4)
def stock_png(size: tuple[int, int] = _SIZE) -> bytes:
    """One plain portrait-coloured PNG of `size`, made once: the offline provider's answer
    when it does not render."""
    im = Image.new("RGB", size, (214, 196, 178))
    w, h = size
    ImageDraw.Draw(im).ellipse((w // 4, h // 6, 3 * w // 4, h // 2), fill=(235, 200, 170))
    return _png(im)


def sample_garment(seed: int) -> bytes:
    """A synthetic 400x400 PNG T-shirt in a seeded colour, maybe striped or logoed, on white."""
    rng = random.Random(seed)
    body = _rgb(rng, (0.5, 0.9), (0.35, 0.85))
    im = Image.new("RGB", (400, 400), (255, 255, 255))
    d = ImageDraw.Draw(im)
    shirt = [
        (160, 60),
        (200, 88),
        (240, 60),
        (300, 75),
        (370, 140),
        (335, 185),
        (300, 160),
        (300, 350),
        (100, 350),
        (100, 160),
        (65, 185),
        (30, 140),
        (100, 75),
    ]
    d.polygon(shirt, fill=body, outline=tuple(c // 2 for c in body), width=3)
    accent = _rgb(rng, (0.4, 1.0), (0.2, 0.9))
    kind = rng.choice(("plain", "stripe", "logo"))
    if kind == "stripe":
        y = rng.randint(190, 280)
        d.rectangle((102, y, 298, y + rng.randint(14, 36)), fill=accent)
    elif kind == "logo":
        d.ellipse((175, 130, 225, 180), fill=accent)
    d.line((160, 62, 200, 90, 240, 62), fill=tuple(c // 2 for c in body), width=4)
    return _png(im)
