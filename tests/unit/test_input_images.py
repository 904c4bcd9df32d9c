"""Input image checks at the edge: base64 of PNG, JPEG or WebP within the size limit."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from serve_app.http.images import ImageRejected, decode_image


def encoded(fmt: str, size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_accepted_formats_in_either_base64_alphabet(fmt: str, mime: str) -> None:
    """PNG, JPEG and WebP are accepted as standard or URL-safe base64, padded or not."""
    raw = encoded(fmt)
    for text in (
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ):
        assert decode_image("images.person", text, 1_000_000) == (raw, mime)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"plain text, not an image").decode(), "not a readable image"),
        ("", "empty"),
        (base64.b64encode(encoded("GIF")).decode(), "not PNG, JPEG or WebP"),
    ],
)
def test_rejections_name_the_field_and_the_reason(text: str, message: str) -> None:
    """Bad input raises ImageRejected whose message starts with the field name."""
    with pytest.raises(ImageRejected, match=message) as info:
        decode_image("images.garment", text, 1_000_000)
    assert str(info.value).startswith("images.garment")


def test_images_over_the_limit_are_refused_before_decoding() -> None:
    """An image larger than the byte limit is refused, with the limit in the message."""
    raw = encoded("PNG", (64, 64))
    with pytest.raises(ImageRejected, match=r"limit is 100|larger than 100"):
        decode_image("images.person", base64.b64encode(raw).decode(), 100)


def test_blob_refs_cannot_escape_the_root(tmp_path: object) -> None:
    """A reference that climbs out of the blob root or is absolute is refused."""
    from pathlib import Path

    from actors.blobs import BlobNotFoundError, FileBlobStore

    store = FileBlobStore(Path(str(tmp_path)))
    store.put_many({"tasks/a/person.png": b"1", "tasks/a/garment.png": b"2"})
    assert store.get("tasks/a/garment.png") == b"2"
    for bad in ("../x", "tasks/../../etc/passwd", "/etc/passwd", ""):
        with pytest.raises(BlobNotFoundError):
            store.get(bad)


def _png_with_garbage_pixels() -> bytes:
    """A PNG whose chunks all carry valid CRCs but whose pixel data is not a zlib stream."""
    data = encoded("PNG", (32, 32))
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    junk = b"\x78\x9c" + b"\xff" * 64
    chunk = struct.pack(">I", len(junk)) + b"IDAT" + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk))
    return data[:start] + chunk + data[start + 12 + length :]


def _jpeg_cut_short() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()[: buf.tell() * 4 // 5]


@pytest.mark.parametrize("data", [_png_with_garbage_pixels(), _jpeg_cut_short()], ids=["png", "jpeg"])
def test_images_that_do_not_decode_whole_are_refused(data: bytes) -> None:
    """A PNG with garbage pixel data or a JPEG cut short is refused, naming the field."""
    with pytest.raises(ImageRejected, match=r"^images\.person: .* does not decode"):
        decode_image("images.person", base64.b64encode(data).decode(), 1_000_000)


def test_other_formats_are_never_decoded() -> None:
    """A GIF is refused as a format, before its decoder reads its header (which here is over the bounds)."""
    wide = base64.b64encode(encoded("GIF", (2000, 10))).decode()
    with pytest.raises(ImageRejected, match="not PNG, JPEG or WebP"):
        decode_image("images.person", wide, 1_000_000, max_side=1500)
