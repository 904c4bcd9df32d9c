"""Input image checks at the edge: base64 of PNG, JPEG or WebP within the size limit."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from serve_app.images import ImageRejected, decode_image


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
