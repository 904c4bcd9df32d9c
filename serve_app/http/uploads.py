"""A submit sent as multipart/form-data: a text part per field, a file part per image role.

The text parts are the JSON body's fields (`models.SubmitTask`): `kind`, `prompt`, `options` (a
JSON object, as text), `user_id`, `idempotency_key`, `webhook_url`, `deadline_seconds` (a
number, as text), `if_late` and `max_price` (whole credits, as text); each image is a file part
named by its role (`person`, `garment`) holding the image's bytes. Starlette's parser
(python-multipart) reads the body within limits: at most one file part per role and one text part per
field, a text part of at most `[limits] max_fields_bytes` (413 beyond); a file part over
`max_image_bytes` is a 413 naming its image, a body that is not multipart a 400. The body as a
whole is bounded by `max_body_bytes` before it gets here (`bodylimit`, `gate`). What the parts
say is then checked as a JSON body is: the same model, the same image checks, idempotency,
credits and rate. Errors name an image `images.<role>`, as for a JSON body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.routing import Match
from starlette.types import Scope

from actors.config import LimitsConfig
from serve_app.http.models import Images, SubmitTask
from serve_app.http.problems import BadRequest, TooLarge, Unprocessable

MULTIPART = "multipart/form-data"
ROLES = tuple(Images.model_fields)
FIELDS = tuple(name for name in SubmitTask.model_fields if name != "images")
# How Starlette's parser words a text part over its size limit (a 413, not a malformed body).
_PART_TOO_LARGE = "Part exceeded maximum size"
# A number as a text part: digits, and a fraction (the model then bounds it).
_NUMBER = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
_WHOLE = re.compile(r"[0-9]{1,10}")


def is_multipart(headers: Headers) -> bool:
    """Whether the request's body is multipart/form-data."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower() == MULTIPART


class MultipartRoute(APIRoute):
    """An APIRoute that takes only multipart/form-data requests: placed before a JSON route of
    the same path and method, it takes the uploads and leaves every other request to that one."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """FastAPI's match, for a multipart request only."""
        match, child = super().matches(scope)
        if match is Match.NONE or not is_multipart(Headers(scope=scope)):
            return Match.NONE, {}
        return match, child


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart submit: its fields as a JSON body would carry them (each uploaded image an
    empty text there), and its images' bytes by role."""

    body: SubmitTask
    images: dict[str, bytes]


def upload_fields(texts: Sequence[tuple[str, str]], files: Sequence[str]) -> dict[str, Any]:
    """The JSON body that a multipart submit's text parts (name, text) and file part names
    stand for, an empty text for each uploaded image; a 422 naming a part that cannot be one."""
    names = [name for name, _ in texts] + list(files)
    twice = sorted({name for name in names if names.count(name) > 1})
    errors = [{"field": _field(name), "message": "sent more than once"} for name in twice]
    errors += [
        {"field": name, "message": "send it as a text part"}
        if name in FIELDS
        else {"field": name, "message": f"not an image role ({', '.join(ROLES)})"}
        for name in files
        if name not in ROLES
    ]
    errors += [
        {"field": f"images.{name}", "message": "send the image as a file part (with a filename)"}
        for name, _ in texts
        if name in ROLES
    ]
    body: dict[str, Any] = {name: text for name, text in texts if name not in ROLES}
    if "options" in body:
        try:
            body["options"] = json.loads(body["options"])
        except ValueError:
            errors.append({"field": "options", "message": 'not JSON: send a JSON object, e.g. {"seed": 7}'})
    if "deadline_seconds" in body:
        text = body["deadline_seconds"].strip()
        if _NUMBER.fullmatch(text):
            body["deadline_seconds"] = float(text)
        else:
            errors.append(
                {"field": "deadline_seconds", "message": "not a number of seconds: send e.g. 30 or 2.5"}
            )
    if "max_price" in body:
        text = body["max_price"].strip()
        if _WHOLE.fullmatch(text):
            body["max_price"] = int(text)
        else:
            errors.append({"field": "max_price", "message": "not whole credits: send e.g. 3"})
    if errors:
        names_at_fault = ", ".join(sorted({e["field"] for e in errors}))
        raise Unprocessable(f"invalid part(s): {names_at_fault}", errors=errors)
    body["images"] = {role: "" for role in files}
    return body


def _field(name: str) -> str:
    return f"images.{name}" if name in ROLES else name


async def parse_form(request: Request, limits: LimitsConfig) -> list[tuple[str, str | UploadFile]]:
    """The request's parts, parsed within the limits; the caller closes the files."""
    parser = MultiPartParser(
        request.headers,
        request.stream(),
        max_files=len(ROLES),
        max_fields=len(FIELDS),
        max_part_size=limits.max_fields_bytes,
    )
    # The body is in memory already (the gate reads it whole): an image within its cap stays
    # there rather than going through a temporary file.
    parser.spool_max_size = limits.max_image_bytes
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith(_PART_TOO_LARGE):
            raise TooLarge(
                f"a text part is over {limits.max_fields_bytes} bytes ([limits] max_fields_bytes); "
                "images go in file parts (with a filename)"
            ) from None
        raise BadRequest(f"the body is not readable as multipart/form-data: {exc.message}") from None
    return form.multi_items()


async def read_upload(request: Request) -> Upload:
    """The multipart submit in `request` (a FastAPI dependency): a 400, 413 or 422 problem for
    one that cannot be read or is not a submit's shape."""
    limits: LimitsConfig = request.app.state.ctx.config.limits
    parts = await parse_form(request, limits)
    try:
        files = {name: part for name, part in parts if isinstance(part, UploadFile)}
        texts = [(name, part) for name, part in parts if isinstance(part, str)]
        fields = upload_fields(texts, [name for name, part in parts if isinstance(part, UploadFile)])
        for role, upload in files.items():
            if (upload.size or 0) > limits.max_image_bytes:
                raise TooLarge(
                    f"images.{role}: the part holds {upload.size} bytes, the limit is "
                    f"{limits.max_image_bytes} ([limits] max_image_bytes)",
                    errors=[{"field": f"images.{role}", "message": "over max_image_bytes"}],
                )
        images = {role: await upload.read() for role, upload in files.items()}
    finally:
        for _, part in parts:
            if isinstance(part, UploadFile):
                await part.close()
    try:
        body = SubmitTask.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    return Upload(body, images)


UploadDep = Annotated[Upload, Depends(read_upload)]


def _text(spec: dict[str, Any]) -> dict[str, Any]:
    """A field's JSON Schema as a text part's: never null (a part left out takes the default)."""
    choices = [c for c in spec.get("anyOf", [spec]) if c.get("type") != "null"]
    kept = {k: v for k, v in spec.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**kept, **choices[0]}


def upload_schema() -> dict[str, Any]:
    """The OpenAPI request body of a multipart submit, beside the JSON one."""
    fields = SubmitTask.model_json_schema()["properties"]
    properties: dict[str, Any] = {name: _text(spec) for name, spec in fields.items() if name in FIELDS}
    properties["options"] = {
        "type": "string",
        "description": 'The options as a JSON object, e.g. {"aspect_ratio": "3:4", "seed": 7}.',
    }
    properties["deadline_seconds"] = {
        "type": "string",
        "pattern": f"^{_NUMBER.pattern}$",
        "description": "The deadline in seconds, as text (e.g. 30 or 2.5): "
        + fields["deadline_seconds"]["description"],
    }
    properties["max_price"] = {
        "type": "string",
        "pattern": f"^{_WHOLE.pattern}$",
        "description": "The most credits, as text (e.g. 3): " + fields["max_price"]["description"],
    }
    for role, spec in Images.model_json_schema()["properties"].items():
        properties[role] = {"type": "string", "format": "binary", "description": spec.get("description", "")}
    return {
        "schema": {
            "type": "object",
            "title": "SubmitUpload",
            "description": "A generation request with its images uploaded: the JSON body's fields as "
            "text parts, each image as a file part named by its role.",
            "properties": properties,
            "required": ["kind", "person"],
        }
    }
