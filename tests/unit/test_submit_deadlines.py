"""A submit's deadline as the HTTP API takes it: the Cancel-After header's durations, the body's
`deadline_seconds` beside it, the 409 for a deadline the ETA misses, and how the schema says so."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from actors.config import Config
from serve_app.http.app import create_app
from serve_app.http.deadlines import deadline_seconds, parse_duration, unreachable
from serve_app.http.estimates import Eta
from serve_app.http.models import SubmitTask
from serve_app.http.problems import BadRequest, DeadlineUnreachable, Unprocessable
from serve_app.http.submission import request_digest
from serve_app.http.uploads import upload_fields


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15", 15.0),
        ("2.5", 2.5),
        ("15s", 15.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1m500ms", 60.5),
        ("2h45m30.5s", 9930.5),
        ("0.5h", 1800.0),
        ("  90s ", 90.0),
        ("24h", 86400.0),
        ("86400", 86400.0),
    ],
)
def test_cancel_after_durations_parse_to_seconds(text: str, seconds: float) -> None:
    """Plain seconds or h, m, s and ms from the largest down, as Replicate's header takes them."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0",
        "0s",
        "0ms",
        "-5s",
        "-5",
        "24h1s",
        "86401",
        "1d",
        "5 m",
        "m",
        "s5",
        "1s1h",  # the largest unit first
        "1m1m",
        "1e3",
        "nan",
        "inf",
        "PT15S",
        "\u0661\u0665s",  # Arabic-Indic digits: only 0-9 are digits here
        "1" * 70 + "s",
    ],
)
def test_what_is_not_a_duration_is_refused_with_a_reason(text: str) -> None:
    """Empty, zero, negative, over a day, unknown units, units out of order, other digits, too long."""
    with pytest.raises(ValueError, match=r".+"):
        parse_duration(text)


def test_the_body_and_the_header_are_one_deadline() -> None:
    """Either gives the deadline; both must agree (in any of their spellings), and a header that
    does not parse is a 422 naming it."""
    assert deadline_seconds(None, None) is None
    assert deadline_seconds(30.0, None) == 30.0
    assert deadline_seconds(None, "1m") == 60.0
    assert deadline_seconds(90.0, "1m30s") == 90.0
    with pytest.raises(BadRequest) as differ:
        deadline_seconds(30.0, "1m")
    assert differ.value.errors == [
        {"field": "deadline_seconds", "message": "differs from the Cancel-After header"}
    ]
    with pytest.raises(Unprocessable) as bad:
        deadline_seconds(None, "soon")
    assert bad.value.status == 422 and bad.value.errors is not None
    assert bad.value.errors[0]["field"] == "Cancel-After" and "Cancel-After" in bad.value.detail


def test_a_deadline_the_p90_misses_is_a_409_naming_what_would_meet_it() -> None:
    """Refused only when the p90 is later than the deadline; the shortest deadline that would be
    met is the p90 rounded up to a whole second; an unknown ETA refuses nothing."""
    assert unreachable(Eta(4.0, 9.5), 9.5) is None
    assert unreachable(Eta(4.0, 9.5), 10.0) is None
    assert unreachable(Eta(), 0.5) is None
    refused = unreachable(Eta(4.0, 9.5), 9.0)
    assert isinstance(refused, DeadlineUnreachable) and refused.status == 409
    assert refused.type_uri == "/problems/deadline-unreachable"
    assert refused.extra == {
        "eta_seconds": 4.0,
        "eta_p90_seconds": 9.5,
        "deadline_seconds": 9.0,
        "min_deadline_seconds": 10,
    }
    assert unreachable(Eta(0.2, 0.3), 0.1).extra["min_deadline_seconds"] == 1  # type: ignore[union-attr]
    beyond = unreachable(Eta(80_000.0, 90_000.2), 86_400.0)
    assert (
        beyond is not None and beyond.extra["min_deadline_seconds"] == 90_001 and "longest" in beyond.detail
    )


BODY: dict[str, Any] = {"kind": "photography", "images": {"person": "aGVsbG8="}}


@pytest.mark.parametrize(
    "value", [0, -1, 86_400.5, "30", True, None], ids=["zero", "negative", "over", "text", "bool", "null"]
)
def test_deadline_seconds_in_the_body_is_bounded(value: Any) -> None:
    """More than 0, at most a day, a JSON number (null: none)."""
    if value is None:
        assert SubmitTask.model_validate({**BODY, "deadline_seconds": None}).deadline_seconds is None
        return
    with pytest.raises(ValidationError):
        SubmitTask.model_validate({**BODY, "deadline_seconds": value})


def test_if_late_is_refuse_or_accept() -> None:
    assert SubmitTask.model_validate(BODY).if_late == "refuse"
    assert SubmitTask.model_validate({**BODY, "if_late": "accept"}).if_late == "accept"
    with pytest.raises(ValidationError):
        SubmitTask.model_validate({**BODY, "if_late": "later"})


def test_a_multipart_deadline_is_a_number_as_text() -> None:
    """The text part becomes the number the model bounds; other text is a 422 naming the part."""
    fields = upload_fields([("kind", "photography"), ("deadline_seconds", " 45.5 ")], ["person"])
    assert SubmitTask.model_validate(fields).deadline_seconds == 45.5
    for text in ("soon", "-3", "1e3", "nan", ""):
        with pytest.raises(Unprocessable) as bad:
            upload_fields([("kind", "photography"), ("deadline_seconds", text)], ["person"])
        assert bad.value.errors == [
            {"field": "deadline_seconds", "message": "not a number of seconds: send e.g. 30 or 2.5"}
        ]


def test_the_deadline_is_part_of_what_a_key_repeats() -> None:
    """A deadline from the body or the header is the same request; another deadline is another
    request; a request without one keeps the digest it had before deadlines."""
    plain = SubmitTask.model_validate(BODY)
    timed = SubmitTask.model_validate({**BODY, "deadline_seconds": 30})
    assert request_digest(timed, None, 30.0) == request_digest(plain, None, 30.0)
    assert request_digest(plain, None, 30.0) != request_digest(plain, None, 31.0)
    assert request_digest(plain) != request_digest(plain, None, 30.0)
    accept = SubmitTask.model_validate({**BODY, "if_late": "accept"})
    assert request_digest(accept) == request_digest(plain)  # if_late means nothing without a deadline


@pytest.fixture
def schema(tmp_path: Path) -> dict[str, Any]:
    """The app's OpenAPI schema (the store is never reached)."""
    base = Config()
    config = replace(
        base,
        redis=replace(base.redis, url="redis://127.0.0.1:1/0"),
        server=replace(base.server, data_dir=str(tmp_path)),
    )

    async def get() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://genqueue") as client:
            body: dict[str, Any] = (await client.get("/openapi.json")).json()
            return body

    return asyncio.run(get())


def test_the_schema_declares_the_deadline_and_its_409(schema: dict[str, Any]) -> None:
    """The submit takes `deadline_seconds`, `if_late` and a Cancel-After header, and declares the
    `deadline-unreachable` problem beside the plain conflict for its 409, with its members."""
    submit = schema["paths"]["/v1/tasks"]["post"]
    assert "Cancel-After" in {p["name"] for p in submit["parameters"] if p["in"] == "header"}
    body = schema["components"]["schemas"]["SubmitTask"]["properties"]
    assert {"deadline_seconds", "if_late"} <= set(body)
    refs = submit["responses"]["409"]["content"]["application/problem+json"]["schema"]["oneOf"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in refs} == {"ConflictProblem", "DeadlineUnreachableProblem"}
    problem = schema["components"]["schemas"]["DeadlineUnreachableProblem"]
    members = {"eta_seconds", "eta_p90_seconds", "deadline_seconds", "min_deadline_seconds"}
    assert members <= set(problem["required"])
    assert problem["properties"]["type"]["const"] == "/problems/deadline-unreachable"
    view = schema["components"]["schemas"]["TaskViewOut"]["properties"]
    assert {"deadline", "deadline_iso"} <= set(view)
