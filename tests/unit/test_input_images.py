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


def _chunk(kind: bytes, body: bytes, crc_flip: int = 0) -> bytes:
    """A PNG chunk, its CRC XORed with `crc_flip` (0: a valid one)."""
    crc = zlib.crc32(kind + body) ^ crc_flip
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png_with_pixels(raw: bytes, size: tuple[int, int] = (4, 2), adler_flip: int = 0) -> bytes:
    """An RGB PNG of `size` whose one IDAT chunk holds `raw` (filter bytes and rows) compressed,
    the zlib stream's checksum XORed with `adler_flip`, every chunk with a valid CRC: only
    what the pixel data says can be wrong."""

    header = struct.pack(">IIBBBBB", *size, 8, 2, 0, 0, 0)
    stream = zlib.compress(raw)
    stream = stream[:-4] + struct.pack(">I", struct.unpack(">I", stream[-4:])[0] ^ adler_flip)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


ROW = b"\x00" + b"\x10\x20\x30" * 4  # filter type 0, then 4 RGB pixels


def test_a_png_s_rows_are_checked_without_being_decoded() -> None:
    """A PNG whose pixel data inflates to the rows its size holds is taken; one row short, one
    row too many, a row with a filter type PNG does not define, or pixel data whose checksum
    does not match is refused, as decoding it would; so is a damaged chunk after the pixels."""
    good = _png_with_pixels(ROW * 2)
    assert decode_image("images.person", base64.b64encode(good).decode(), 1_000_000)[1] == "image/png"
    damaged = good[:-12] + _chunk(b"tEXt", b"Comment\0x", crc_flip=1) + good[-12:]  # after the pixels
    bad = [_png_with_pixels(raw) for raw in (ROW, ROW * 3, ROW + b"\x05" + ROW[1:])]
    bad += [damaged, _png_with_pixels(ROW * 2, adler_flip=1)]
    for data in bad:
        with pytest.raises(ImageRejected, match=r"^images\.person: the PNG data does not decode"):
            decode_image("images.person", base64.b64encode(data).decode(), 1_000_000)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_pngs_of_every_mode_and_depth_are_taken(mode: str) -> None:
    """PNGs of each colour type and bit depth Pillow writes, odd sizes included, are taken."""
    for size in ((1, 1), (7, 3), (33, 17)):
        image = Image.effect_noise(size, 50).convert(mode) if mode != "I;16" else Image.new(mode, size, 40000)
        for options in ({}, {"bits": 4} if mode == "P" else {"compress_level": 0}):
            buf = io.BytesIO()
            image.save(buf, format="PNG", **options)
            assert decode_image("images.person", base64.b64encode(buf.getvalue()).decode(), 1_000_000)


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
