"""The problem types as the contract: every operation's error statuses declared in the OpenAPI
schema as problem+json, each problem named by a `/problems/<slug>` type with a page there, and
the app's own answers carrying those types and matching what the schema declares."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI

from actors.config import AuthConfig, Config
from serve_app.haproxy import UNAVAILABLE_BODY
from serve_app.http.app import create_app
from serve_app.http.problem_docs import COMMON, responses, schema_name
from serve_app.http.problems import (
    PROBLEM,
    PROBLEMS,
    Conflict,
    InvalidRequest,
    TooManyRequests,
    Unavailable,
    Unprocessable,
    type_for,
)

REF = "#/components/schemas/"
# Nothing here reaches the store: the requests are answered before any route reads it.
NO_STORE = "redis://127.0.0.1:1/0"


def config(data_dir: Path, auth: bool) -> Config:
    """A config whose store is never reached, with tokens required or not."""
    base = Config()
    return replace(
        base,
        redis=replace(base.redis, url=NO_STORE),
        server=replace(base.server, data_dir=str(data_dir)),
        auth=AuthConfig(required=auth),
    )


class InProcess:
    """The app's answers without a server: each request on an event loop of its own, in this
    thread (no lifespan: nothing is warmed)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The app's answer to one request."""

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://genqueue") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str) -> httpx.Response:
        """The app's answer to a GET."""
        return self.request("GET", url)


@pytest.fixture
def open_app(tmp_path: Path) -> InProcess:
    """The app without tokens."""
    return InProcess(create_app(config(tmp_path, auth=False)))


@pytest.fixture
def schema(open_app: InProcess) -> dict[str, Any]:
    """The app's OpenAPI schema, as `/openapi.json` serves it."""
    body: dict[str, Any] = open_app.get("/openapi.json").json()
    return body


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            yield f"{method.upper()} {path}", op


def declared(op: dict[str, Any], status: int) -> list[str]:
    """The problem schemas an operation declares for `status`."""
    content = op["responses"][str(status)]["content"]
    assert list(content) == [PROBLEM], content
    body = content[PROBLEM]["schema"]
    return [o["$ref"].removeprefix(REF) for o in body.get("oneOf", [body])]


def test_every_error_an_operation_declares_is_a_typed_problem(schema: dict[str, Any]) -> None:
    """Each 4xx and 5xx of each operation is problem+json of schemas whose `type` and `status`
    are constants: a registered `/problems/<slug>` and that very status."""
    components = schema["components"]["schemas"]
    types = {cls.type_uri for cls in PROBLEMS.values()}
    seen = 0
    for name, op in operations(schema):
        errors = [int(s) for s in op["responses"] if int(s) >= 400]
        assert {500, 503} <= set(errors), name
        if name not in ("GET /healthz", "GET /readyz"):  # they take nothing that could be wrong
            assert any(400 <= s < 500 for s in errors), name
        for status in errors:
            for ref in declared(op, status):
                props = components[ref]["properties"]
                assert props["type"]["const"] in types and props["status"]["const"] == status, (name, ref)
                assert {"type", "title", "status", "detail"} <= set(components[ref]["required"])
                seen += 1
    assert seen > 100
    assert "HTTPValidationError" not in str(schema), "FastAPI's own 422 body is not what the app answers"


def test_what_an_operation_takes_decides_its_common_problems(schema: dict[str, Any]) -> None:
    """A token means 401 and 403, parameters 422 (invalid-request), a body 400 and 413, a path
    parameter 404; the submit route adds its own: 402, 408, 409, 429."""
    ops = dict(operations(schema))
    for name, op in ops.items():
        for applies, problems in COMMON:
            if applies(op):
                for cls in problems:
                    assert schema_name(cls) in declared(op, cls.status), (name, cls.__name__)
    submit = ops["POST /v1/tasks"]
    assert {"402", "408", "409", "429"} <= set(submit["responses"])
    assert declared(submit, 402) == ["InsufficientCreditsProblem"]
    assert set(declared(submit, 422)) == {"UnprocessableContentProblem", "InvalidRequestProblem"}
    assert "security" not in ops["GET /v1/results/{task_id}"]  # a result link needs no token
    assert declared(ops["GET /v1/results/{task_id}"], 403) == ["InvalidResultLinkProblem"]
    credits = schema["components"]["schemas"]["InsufficientCreditsProblem"]
    assert {"balance", "price"} <= set(credits["required"])


def test_a_route_declares_its_problems_from_the_classes() -> None:
    """`responses` groups classes by status (a oneOf when a status has several) and keeps a
    route's words for a status."""
    got = responses(Conflict, Unprocessable, InvalidRequest, TooManyRequests, why={409: "Not now."})
    assert set(got) == {409, 422, 429}
    assert got[409]["description"] == "Not now."
    assert got[429]["content"][PROBLEM]["schema"] == {"$ref": REF + "TooManyRequestsProblem"}
    assert len(got[422]["content"][PROBLEM]["schema"]["oneOf"]) == 2


def test_each_problem_type_is_its_own_uri_with_a_page(open_app: InProcess) -> None:
    """Slugs are unique and types are `/problems/<slug>`; each type's page is served, without a
    token, and says its title and status; the index links every one."""
    assert len({cls.type_uri for cls in PROBLEMS.values()}) == len(PROBLEMS) >= 15
    index = open_app.get("/problems")
    assert index.status_code == 200
    for cls in PROBLEMS.values():
        assert cls.type_uri == f"/problems/{cls.slug}" and cls.type_uri in index.text
        page = open_app.get(cls.type_uri)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert cls.title in page.text and f"HTTP {cls.status}" in page.text
    assert type_for(405) == "/problems/http-405" and open_app.get(type_for(405)).status_code == 200
    assert open_app.get("/problems/no-such-thing").status_code == 404
    # What HAProxy answers while no replica can: the same type, written out where it is built.
    assert json.loads(UNAVAILABLE_BODY)["type"] == Unavailable.type_uri


def is_declared(schema: dict[str, Any], method: str, path: str, status: int, body: dict[str, Any]) -> None:
    """`body` validates against what the operation declares for `status`."""
    op = schema["paths"][path][method.lower()]
    wanted = {"oneOf": [{"$ref": REF + name} for name in declared(op, status)]}
    jsonschema.validate(body, {**wanted, "components": schema["components"]})


OVER = b"x" * (Config().limits.max_body_bytes + 1)
NO_TASK = "/v1/results/" + "0" * 32
# (method, url, body: JSON or raw bytes, the operation's path in the schema (None: no operation),
# status, problem slug)
BAD: list[tuple[str, str, Any, str | None, int, str]] = [
    ("POST", "/v1/tasks", b"{not json", "/v1/tasks", 400, "malformed-json"),
    ("POST", "/v1/tasks", {"kind": "video", "images": {"person": "x"}}, "/v1/tasks", 422, "invalid-request"),
    ("POST", "/v1/tasks", OVER, "/v1/tasks", 413, "content-too-large"),
    ("POST", "/v1/admin/credits", OVER, "/v1/admin/credits", 413, "content-too-large"),
    ("GET", "/v1/tasks/not-an-id", None, "/v1/tasks/{task_id}", 422, "invalid-request"),
    ("GET", NO_TASK + "?expires=1&sig=x", None, "/v1/results/{task_id}", 403, "invalid-result-link"),
    ("GET", NO_TASK + "?expires=soon&sig=x", None, "/v1/results/{task_id}", 422, "invalid-request"),
    ("GET", "/nowhere", None, None, 404, "not-found"),
    ("DELETE", "/healthz", None, None, 405, "http-405"),
]


@pytest.mark.parametrize(
    ("method", "url", "body", "path", "status", "slug"), BAD, ids=[f"{b[0]} {b[1][:24]} {b[5]}" for b in BAD]
)
def test_the_apps_own_problems_carry_their_type(
    open_app: InProcess,
    schema: dict[str, Any],
    method: str,
    url: str,
    body: Any,
    path: str | None,
    status: int,
    slug: str,
) -> None:
    """A bad request gets problem+json with its `/problems/<slug>` type (never about:blank),
    matching the schema the operation declares for its status."""
    raw = body if isinstance(body, bytes) else None
    as_json = None if raw is not None else body
    headers = {"content-type": "application/json"}
    sent = open_app.request(method, url, content=raw, json=as_json, headers=headers)
    assert sent.status_code == status, sent.text
    assert sent.headers["content-type"].startswith(PROBLEM)
    problem = sent.json()
    assert problem["type"] == f"/problems/{slug}" and problem["status"] == status and problem["detail"]
    if path is not None:
        is_declared(schema, method, path, status, problem)


def test_without_a_token_the_answer_is_an_unauthorized_problem(tmp_path: Path) -> None:
    """Tokens required: no token is a 401 `/problems/unauthorized` with a WWW-Authenticate
    challenge, as the schema declares it."""
    client = InProcess(create_app(config(tmp_path, auth=True)))
    refused = client.get("/v1/me")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["type"] == "/problems/unauthorized"
    is_declared(client.get("/openapi.json").json(), "GET", "/v1/me", 401, refused.json())


def test_the_docs_page_and_its_assets_are_served_locally(open_app: InProcess) -> None:
    """/docs loads Swagger UI from the app's own files (fastapi-offline's), not from a CDN."""
    page = open_app.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/docs-assets/swagger-ui-bundle.js" in assets and "/static/docs.js" in assets
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        assert open_app.get(asset).status_code == 200, asset
