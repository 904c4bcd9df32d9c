"""Input image checks: a PNG, JPEG or WebP that decodes whole, within the size limits, sent as
base64 (`decode_image`) or as bytes (`check_image`: an upload, or an image fetched from a URL)."""

from __future__ import annotations

import base64
import binascii
import io
import struct
import warnings
import zlib
from typing import cast

from PIL import Image, UnidentifiedImageError
from zlib_ng import zlib_ng

from events.errors import GenqueueError

ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class ImageRejected(GenqueueError, ValueError):
    """An input image that cannot be used; the message says why."""


# The class of zlib-ng's errors (its type stub declares an instance).
_ZLIB_NG_ERROR = cast(type[Exception], zlib_ng.error)

# A PNG's samples per pixel by its colour type (the PNG specification, IHDR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_INFLATE_STEP = 1 << 20  # bytes of pixel data inflated at a time (never held whole)


def _check_png_pixels(data: bytes) -> None:
    """A non-interlaced PNG's pixel data, checked without unfiltering it: its IDAT chunks make one
    complete zlib stream (its checksum matches) of exactly the bytes its size holds, each row
    led by a filter type the format defines.

    With Pillow's `verify` first (every chunk's CRC, the chunks in order up to IEND), this finds
    what decoding it whole finds (a file cut short, damaged bytes, pixel data that is not a
    zlib stream, too short or too long) in a third of the time: unfiltering the rows, most of a
    decode's work, cannot fail on rows of the right length and filter.
    """
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_CHANNELS:
        raise ValueError(f"colour type {colour}")
    stride = 1 + (width * _PNG_CHANNELS[colour] * depth + 7) // 8  # a filter byte, then the row
    expected, inflated = height * stride, 0
    # zlib-ng: the same stream format and checks as zlib, at a fifth of its time here (0.09 ms,
    # not 0.42 ms, for a 640x480 photo's 900 KB of pixel data).
    inflater = zlib_ng.decompressobj()
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IEND":
            break
        more = kind == b"IDAT"
        chunk = data[pos + 8 : pos + 8 + length] if more else b""
        while more:
            out = inflater.decompress(chunk, _INFLATE_STEP)
            filters = out[(-inflated) % stride :: stride]  # the bytes that start a row
            if filters and max(filters) > 4:
                raise ValueError("a row's filter type is not one PNG defines")
            inflated += len(out)
            if inflated > expected:
                raise ValueError("more pixel data than the image holds")
            chunk = inflater.unconsumed_tail
            # Input left, or a full step out that may have more behind it.
            more = bool(chunk) or (len(out) == _INFLATE_STEP and not inflater.eof)
        pos += 12 + length
    if not inflater.eof or inflated != expected:
        raise ValueError(f"pixel data cut short ({inflated} of {expected} bytes)")


def decode_image(
    field: str, text: str, max_bytes: int, max_pixels: int = 40_000_000, max_side: int = 8192
) -> tuple[bytes, str]:
    """The image bytes and mime type of a base64 field, or ImageRejected naming the field.

    An image of more than `max_pixels` (a decompression bomb: a small file that would
    decode to a huge bitmap) or more than `max_side` pixels on a side is refused from its
    header, before any pixel is decoded; any other is read whole (a JPEG decoded at an eighth
    of its size, every scan still read; a PNG's pixel data inflated and checked, not unfiltered,
    unless it is interlaced), so one that is cut short or corrupt is refused here.
    """
    if len(text) > (max_bytes * 4) // 3 + 8:
        raise ImageRejected(f"{field}: image is larger than {max_bytes} bytes")
    compact = "".join(text.split())
    if compact.startswith("data:") and "," in compact:
        compact = compact.split(",", 1)[1]
    compact += "=" * (-len(compact) % 4)
    try:
        alphabet = b"-_" if ("-" in compact or "_" in compact) else None
        data = base64.b64decode(compact, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRejected(f"{field}: not valid base64") from exc
    return check_image(field, data, max_bytes, max_pixels, max_side)


def check_image(
    field: str, data: bytes, max_bytes: int, max_pixels: int = 40_000_000, max_side: int = 8192
) -> tuple[bytes, str]:
    """`data` and its mime type if it is an image `decode_image` would take, or ImageRejected
    naming the field."""
    if not data:
        raise ImageRejected(f"{field}: empty image")
    if len(data) > max_bytes:
        raise ImageRejected(f"{field}: image is {len(data)} bytes, the limit is {max_bytes}")
    fmt = ""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it, and raises beyond: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the allowed formats' decoders ever see the bytes.
            with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as img:
                fmt = img.format or ""
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageRejected(
                        f"{field}: image is {width}x{height} pixels, the limit is {max_pixels}"
                    )
                if max(width, height) > max_side:
                    raise ImageRejected(
                        f"{field}: image is {width}x{height}, the limit is {max_side} pixels a side"
                    )
                # Decode the whole stream now: a cut-short or corrupt image would otherwise pass
                # here and fail only after an upstream call was spent on it. A JPEG is decoded
                # at an eighth of its size (libjpeg's DCT scaling): every scan is still read and
                # entropy-decoded, so truncation and broken data are found the same, at about a
                # third of the time for a 12-megapixel photo (34 ms, not 90 ms). A PNG that is
                # not interlaced (data[28], IHDR's last byte) is checked without unfiltering its
                # rows (`_check_png_pixels`): 0.1 ms, not 1.3 ms, for a 640x480 photo.
                if fmt == "JPEG":
                    img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
                if fmt == "PNG" and data[28] == 0:
                    img.verify()
                    _check_png_pixels(data)
                else:
                    img.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageRejected(f"{field}: image has too many pixels (limit {max_pixels})") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(f"{field}: not a readable image, or not PNG, JPEG or WebP") from exc
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, _ZLIB_NG_ERROR) as exc:
        raise ImageRejected(f"{field}: the {fmt or 'image'} data does not decode ({exc})") from exc
    if fmt not in ALLOWED_FORMATS:
        raise ImageRejected(f"{field}: format {fmt or 'unknown'} is not PNG, JPEG or WebP")
    return data, ALLOWED_FORMATS[fmt]
