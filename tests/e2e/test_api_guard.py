"""Hostile input against the HTTP app on a real Valkey: oversized bodies, decompression bombs,
huge images, submit rates, backlog bounds; then schemathesis over the whole OpenAPI schema.

The app runs under uvicorn in a thread with no actors: nothing is dispatched, so submitted
tasks stay waiting and the backlog bounds can be reached.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, status_code_conformance

from actors.config import CreditsConfig, LimitsConfig
from events.catalogue import CreditsGranted
from serve_app.cli.burst import payload
from tests.helpers import append_to, make_config
from tests.served import App, served

LIMITS = LimitsConfig(
    max_body_bytes=400_000,
    max_image_bytes=250_000,
    max_image_pixels=1_000_000,
    max_image_side=1500,
    user_submit_rate="4/minute",
)


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    base = make_config(
        store_url,
        str(tmp_path_factory.mktemp("guard")),
        auth=True,
        credits=CreditsConfig(default_grant=1000),
        per_user_waiting=3,
    )
    config = replace(base, limits=LIMITS, queue=replace(base.queue, max_waiting=2000))
    with served(config) as running:
        yield running


def png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def test_an_oversized_body_is_refused_before_it_is_read(app: App) -> None:
    admin = app.token("root", "admin")
    with httpx.Client(base_url=app.url, timeout=30, headers=admin) as client:
        declared = client.post(
            "/v1/tasks", content=b"{" + b" " * 500_000, headers={"content-type": "application/json"}
        )
        assert "limit is 400000 bytes" in is_problem(declared, 413)["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(50):
                yield b" " * 20_000

        streamed = client.post("/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
        is_problem(streamed, 413)


def test_bombs_and_huge_images_are_422_naming_the_field(app: App) -> None:
    admin = app.token("root", "admin")
    with httpx.Client(base_url=app.url, timeout=30, headers=admin) as client:
        for image, words in (
            (png(1200, 1200), "pixels"),
            (png(3000, 3000), "pixels"),
            (png(1600, 10), "a side"),
        ):
            body = {**payload(0, "photography"), "images": {"person": image}}
            problem = is_problem(client.post("/v1/tasks", json=body), 422)
            assert problem["errors"][0]["field"] == "images.person" and words in problem["detail"]


def test_a_user_token_over_its_submit_rate_gets_429_with_retry_after(app: App) -> None:
    user = app.token("rater", "user")
    body = {**payload(0, "photography")}
    del body["user_id"]
    with httpx.Client(base_url=app.url, timeout=30, headers=user) as client:
        codes = [
            client.post("/v1/tasks", json=body, headers={"Idempotency-Key": f"k{i}"}).status_code
            for i in range(5)
        ]
        assert codes[:3] == [202, 202, 202]
        limited = client.post("/v1/tasks", json=body)
        problem = is_problem(limited, 429)
        assert 1 <= int(limited.headers["retry-after"]) <= 60 and problem["retry_after"] >= 1


def test_backlog_bounds_per_user_are_429_with_retry_after(app: App) -> None:
    service = app.token("svc", "service")
    with httpx.Client(base_url=app.url, timeout=30, headers=service) as client:
        codes = [
            client.post("/v1/tasks", json={**payload(0, "photography"), "user_id": "hoarder"}).status_code
            for _ in range(4)
        ]
        assert codes == [202, 202, 202, 429]
        refused = client.post("/v1/tasks", json={**payload(0, "photography"), "user_id": "hoarder"})
        assert (
            "limit per user" in is_problem(refused, 429)["detail"]
            and int(refused.headers["retry-after"]) >= 1
        )
        assert (
            client.post(
                "/v1/tasks", json={**payload(0, "photography"), "user_id": "someone-else"}
            ).status_code
            == 202
        )


def not_http(response: Any, case: Any) -> bool:
    """Whether `case` is a request that is not HTTP at all (a Content-Length that is not a
    number), which the server's HTTP parser refuses with its own 400 before any application
    sees it."""
    sent = {k.lower(): v for k, v in (case.headers or {}).items()}
    return bool(response.status_code == 400 and not str(sent.get("content-length", "0")).isdigit())


@schemathesis.check
def problem_body(ctx: Any, response: Any, case: Any) -> None:
    """Every error answer is an RFC 9457 problem with its status; but for a request that is not
    HTTP at all (`not_http`)."""
    if not_http(response, case):
        return
    if response.status_code >= 400:
        assert response.headers.get("content-type", [""])[0].startswith("application/problem+json"), (
            response.headers
        )
        assert response.json()["status"] == response.status_code


@schemathesis.check
def declared_status(ctx: Any, response: Any, case: Any) -> None:
    """Every status answered is one the schema declares for the operation; but for a request
    that is not HTTP at all (`not_http`)."""
    if not_http(response, case):
        return
    status_code_conformance(ctx, response, case)


# Examples per operation and generation mode for each role: the admin reaches every operation,
# the other roles mostly the refusals that are theirs.
FUZZ_EXAMPLES = {"admin": 30, "user": 10, "service": 10}


@pytest.mark.parametrize("role", list(FUZZ_EXAMPLES))
def test_schemathesis_finds_no_server_error_and_only_problem_bodies(app: App, role: str) -> None:
    """Every operation of the OpenAPI schema with generated (also invalid) input, as an admin,
    a user and a service token: no 5xx, every refusal a problem body, and every status one the
    schema declares for that operation."""
    who = f"fuzzer-{role}"
    headers = app.token(who, role)
    append_to(app.config, [CreditsGranted(user_id=who, amount=100_000, by="test", at=time.time())])
    schema = schemathesis.openapi.from_url(f"{app.url}/openapi.json")
    cases: list[tuple[str, int]] = []
    for operation in schema.get_all_operations():
        op = operation.ok()
        for mode in GenerationMode:  # valid input, and input that breaks the schema

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=FUZZ_EXAMPLES[role],
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def run(case: Any) -> None:
                response = case.call(base_url=app.url, headers=headers)
                cases.append((f"{case.method} {case.path}", response.status_code))
                if case.path.endswith("/intake/pause") and response.status_code < 300:
                    # A paused intake answers every submit 503 by design: open it again at once,
                    # whatever order the operations come in.
                    httpx.post(f"{app.url}/v1/admin/intake/resume", headers=headers, timeout=30)
                # Every status answered is one the schema declares for the operation.
                checks = [not_a_server_error, declared_status, problem_body]
                case.validate_response(response, checks=checks)

            try:
                run()
            except Unsatisfiable:  # nothing to break: an operation without parameters or body
                assert mode is GenerationMode.NEGATIVE
    server_errors = [c for c in cases if c[1] >= 500]
    operations = len({c[0] for c in cases})
    print(f"schemathesis as {role}: {len(cases)} cases, {operations} operations, {len(server_errors)} 5xx")
    assert len(cases) >= 10 * FUZZ_EXAMPLES[role] and not server_errors
