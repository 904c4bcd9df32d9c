"""`max_price` on a submit: the model's bounds, the multipart text part, the 422 for a price
below the first route's, and the idempotency digest of a request without it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import ValidationError

from actors.config import parse
from serve_app.http.admission import admission, check_max_price
from serve_app.http.app import create_app
from serve_app.http.auth import Caller
from serve_app.http.models import SubmitTask
from serve_app.http.problems import Unprocessable
from serve_app.http.submission import request_digest
from serve_app.http.uploads import upload_fields

ROUTES = [
    {"name": "standard", "pools": ["pool-a"], "price": 2},
    {"name": "premium", "pools": ["pool-b", "pool-c"], "price": 5},
]
BODY: dict[str, Any] = {"kind": "photography", "images": {"person": "x"}}


def routed(tmp_path: Path) -> Any:
    """Two routes priced 2 and 5; no token needed and no store reachable (none is asked)."""
    return parse(
        {
            "routes": ROUTES,
            "auth": {"required": False},
            "redis": {"url": "redis://127.0.0.1:1/0"},
            "server": {"data_dir": str(tmp_path)},
        },
        {},
    )


@pytest.mark.parametrize("value", [-1, 2**31, 2.0, "3", True])
def test_max_price_is_whole_credits(value: Any) -> None:
    """max_price is a JSON integer from 0."""
    with pytest.raises(ValidationError, match="max_price"):
        SubmitTask.model_validate({**BODY, "max_price": value})
    assert SubmitTask.model_validate({**BODY, "max_price": 0}).max_price == 0
    assert SubmitTask.model_validate(BODY).max_price is None


def test_a_multipart_max_price_is_whole_credits_as_text() -> None:
    """The text part "7" is 7; anything but digits is a 422 naming the part."""
    assert upload_fields([("kind", "photography"), ("max_price", " 7 ")], ["person"])["max_price"] == 7
    with pytest.raises(Unprocessable) as caught:
        upload_fields([("kind", "photography"), ("max_price", "7.5")], ["person"])
    assert caught.value.errors == [{"field": "max_price", "message": "not whole credits: send e.g. 3"}]


def test_the_charge_follows_max_price_and_a_low_one_is_refused(tmp_path: Path) -> None:
    """The admission charges the first route's price, or the dearest within max_price; below
    the first route's price the submit is a 422 naming max_price."""
    config = routed(tmp_path)
    caller = Caller("u1", "admin", "tok")
    assert admission(config, "fitting", caller).price == 2
    assert admission(config, "fitting", caller, 4).price == 2
    assert admission(config, "fitting", caller, 5).price == 5
    check_max_price(config, "fitting", 2)
    with pytest.raises(Unprocessable) as caught:
        check_max_price(config, "fitting", 1)
    assert caught.value.status == 422 and caught.value.errors == [
        {"field": "max_price", "message": "at least 2"}
    ]


def test_a_submit_below_the_first_routes_price_is_a_422(tmp_path: Path) -> None:
    """POST /v1/tasks with a max_price under the first route's price is an RFC 9457 422 naming
    `max_price`, before anything is stored or charged."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    body = {**BODY, "images": {"person": base64.b64encode(buf.getvalue()).decode()}, "user_id": "u1"}

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(routed(tmp_path)))
        async with httpx.AsyncClient(transport=transport, base_url="http://genqueue") as client:
            return await client.post("/v1/tasks", json={**body, "max_price": 1})

    answer = asyncio.run(post())
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["errors"] == [{"field": "max_price", "message": "at least 2"}]
    assert "max_price 1" in problem["detail"]


def test_the_digest_of_a_request_without_max_price_is_unchanged() -> None:
    """A keyed request without max_price or lane keeps the digest it had before either field
    existed; a max_price or a lane makes it another request."""
    plain = SubmitTask.model_validate(BODY)
    asked = plain.model_dump(mode="json", exclude={"idempotency_key", "deadline_seconds", "if_late"})
    asked.pop("max_price")
    asked.pop("lane")
    before = hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()
    assert request_digest(plain) == before
    assert request_digest(SubmitTask.model_validate({**BODY, "max_price": 5})) != before
    assert request_digest(SubmitTask.model_validate({**BODY, "lane": "paid"})) != before
