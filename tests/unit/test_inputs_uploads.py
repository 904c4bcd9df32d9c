"""Multipart submits, the pure part: which parts make a body, the schema they are declared with,
and how uploaded and fetched images count in a request's digest."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Message

from actors.config import LimitsConfig
from serve_app.http.images import ImageRejected, check_image
from serve_app.http.models import SubmitTask
from serve_app.http.problems import ApiProblem, BadRequest, TooLarge, Unprocessable
from serve_app.http.submission import request_digest
from serve_app.http.uploads import FIELDS, is_multipart, parse_form, upload_fields, upload_schema


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def test_text_parts_and_file_names_make_the_json_body_with_empty_images() -> None:
    """Text parts become fields (options parsed as JSON), each file part an empty image."""
    body = upload_fields([("kind", "fitting"), ("options", '{"seed": 7}')], ["person", "garment"])
    assert body == {"kind": "fitting", "options": {"seed": 7}, "images": {"person": "", "garment": ""}}
    assert SubmitTask.model_validate(body).options.seed == 7


@pytest.mark.parametrize(
    ("texts", "files", "field", "message"),
    [
        ([("kind", "photography"), ("kind", "fitting")], ["person"], "kind", "more than once"),
        ([], ["person", "person"], "images.person", "more than once"),
        ([("person", "aGVsbG8=")], [], "images.person", "file part"),
        ([], ["person", "hat"], "hat", "not an image role"),
        ([], ["person", "prompt"], "prompt", "text part"),
        ([("options", "{seed")], ["person"], "options", "not JSON"),
    ],
)
def test_a_part_that_cannot_be_a_field_is_a_422_naming_it(
    texts: list[tuple[str, str]], files: list[str], field: str, message: str
) -> None:
    """A repeated part, an image sent as text, an unknown file part, a field sent as a file or
    options that are not JSON: a 422 whose errors name the part."""
    with pytest.raises(Unprocessable) as refused:
        upload_fields(texts, files)
    errors = refused.value.errors or []
    assert any(e["field"] == field and message in e["message"] for e in errors), errors


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("multipart/form-data; boundary=x", True),
        ("Multipart/Form-Data;boundary=x", True),
        ("multipart/form-data", True),
        ("multipart/mixed; boundary=x", False),
        ("application/json", False),
        ("", False),
    ],
)
def test_only_form_data_goes_to_the_upload_route(content_type: str, expected: bool) -> None:
    """multipart/form-data (any case, any parameters) is an upload; everything else is not."""
    assert is_multipart(Headers({"content-type": content_type} if content_type else {})) is expected


def test_the_upload_schema_has_a_binary_part_per_role_and_no_null_fields() -> None:
    """Each role is a binary part; optional text fields are plain strings (a part left out is null)."""
    schema: dict[str, Any] = upload_schema()["schema"]
    props = schema["properties"]
    assert props["person"]["format"] == props["garment"]["format"] == "binary"
    assert schema["required"] == ["kind", "person"] and "images" not in props
    assert all("anyOf" not in spec and spec.get("type") == "string" for spec in props.values()), props


def test_an_image_given_as_bytes_counts_in_the_digest_by_its_content() -> None:
    """Uploaded or fetched images are digested by content: the same bytes give the same digest
    whatever the URL or part, other bytes another; a base64 body's digest is unchanged."""
    body = SubmitTask.model_validate({"kind": "photography", "images": {"person": ""}})
    by_url = SubmitTask.model_validate(
        {"kind": "photography", "images": {"person": {"url": "https://a/x.png"}}}
    )
    assert request_digest(body, {"person": b"one"}) == request_digest(by_url, {"person": b"one"})
    assert request_digest(body, {"person": b"one"}) != request_digest(body, {"person": b"two"})
    assert request_digest(body) == request_digest(body, {})


def test_bytes_meet_the_same_checks_as_base64() -> None:
    """check_image takes a PNG and refuses a non-image, an empty image and one over the cap."""
    data = png()
    assert check_image("images.person", data, 10_000) == (data, "image/png")
    for bad, cap, why in (
        (b"not an image", 10_000, "not a readable image"),
        (b"", 10, "empty"),
        (data, 10, "limit"),
    ):
        with pytest.raises(ImageRejected, match=why):
            check_image("images.person", bad, cap)


def parsed(body: bytes, content_type: str = "multipart/form-data; boundary=b") -> object:
    """What parse_form makes of `body` with a 100-byte text part limit: the parts or the problem."""
    sent: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return sent.pop(0) if sent else {"type": "http.disconnect"}

    request = Request(
        {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}, receive
    )
    try:
        return asyncio.run(parse_form(request, LimitsConfig(max_fields_bytes=100)))
    except ApiProblem as exc:
        return exc


def test_the_parser_limits_give_a_413_for_a_long_text_part_and_a_400_for_garbage() -> None:
    """Starlette's refusal of a text part over the limit is a 413; anything else it cannot parse a 400."""
    part = b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n%s\r\n--b--\r\n'
    assert parsed(part % (b"x" * 100)) == [("prompt", "x" * 100)]
    assert isinstance(parsed(part % (b"x" * 101)), TooLarge)
    for garbage, content_type in (
        (b"garbage", "multipart/form-data; boundary=b"),
        (b"", "multipart/form-data"),
    ):
        assert isinstance(parsed(garbage, content_type), BadRequest)
    fields = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(len(FIELDS) + 1)
    )
    too_many = parsed(fields + b"--b--\r\n")
    assert isinstance(too_many, BadRequest) and "Too many fields" in too_many.detail
