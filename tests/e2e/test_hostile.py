"""Hostile input against a whole genqueue behind Ray Serve: every case is a 4xx problem (never a
5xx), leaks nothing, charges nothing, and afterwards the instance is ready and its log audits
clean.

One module-wide instance (tokens and credits on, webhooks on with no private network allowed)
takes every case in turn; the last test checks the instance afterwards.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from PIL import Image

from actors.config import CreditsConfig, Secret
from events.catalogue import CreditsGranted, TokenRevoked
from serve_app.cli.burst import payload
from serve_app.cli.ops import run_audit
from serve_app.http.auth import new_token
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.helpers import append_to, eventually, make_config, run_async

MALLORY_CREDITS = 5


@dataclass
class Hostile:
    """The instance and the tokens the cases use."""

    live: Running
    tokens: dict[str, str]
    alice_task: str
    results: list[tuple[str, int]]

    def headers(self, who: str) -> dict[str, str]:
        """The Authorization header of `who` ("" for none)."""
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}


@pytest.fixture(scope="module")
def hostile(ray_session: None, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    base = make_config(
        store_url,
        str(tmp_path_factory.mktemp("hostile")),
        slots=4,
        latency=0.05,
        port=free_port(),
        auth=True,
        credits=CreditsConfig(default_grant=0),
    )
    config = replace(
        base,
        webhooks=replace(base.webhooks, secret=Secret("w" * 32)),
        # The cases come one after another faster than a user's submit rate allows.
        limits=replace(base.limits, user_submit_rate="1000/second"),
    )
    with running(config, dashboard=False) as live:
        tokens: dict[str, str] = {}
        events: list[Any] = []
        for who, role in (("mallory", "user"), ("alice", "user"), ("svc", "service"), ("root", "admin")):
            tokens[who], created = new_token(who, role)
            events.append(created)
        tokens["metrics"], created = new_token("prometheus", "metrics")
        events.append(created)
        tokens["scoped"], created = new_token("app1", "service", users=["app1:*"])
        events.append(created)
        revoked, created = new_token("mallory", "user")
        tokens["revoked"] = revoked
        events += [
            created,
            TokenRevoked(token_id=created.token_id, digest=created.digest, at=time.time()),
            CreditsGranted(user_id="mallory", amount=MALLORY_CREDITS, by="test", at=time.time()),
            CreditsGranted(user_id="alice", amount=5, by="test", at=time.time()),
        ]
        append_to(live.config, events)
        body = payload(1, "photography")
        del body["user_id"]
        with httpx.Client(base_url=live.api_url, timeout=30) as client:
            answer = client.post(
                "/v1/tasks", json=body, headers={"Authorization": f"Bearer {tokens['alice']}"}
            )
        assert answer.status_code == 202, answer.text
        yield Hostile(live, tokens, answer.json()["task_id"], [])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(width: int, height: int, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 0).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def garbage_png() -> bytes:
    """A PNG whose header is sound and whose pixel data is not a zlib stream (CRC kept valid)."""
    import struct
    import zlib

    good = png(64, 64)
    head = good[: good.index(b"IDAT") - 4]
    data = b"\x00garbage" * 50
    chunk = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data))
    end = b"\x00\x00\x00\x00IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return head + chunk + end


def cut_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()[:400]


def bomb() -> bytes:
    """A small PNG whose header claims 50,000 x 50,000 pixels of zeros (a compressed stream of
    the first rows: decoding it whole would take gigabytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (50_001 * 200), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def submit(**change: Any) -> dict[str, Any]:
    """A valid photography submit with `change` applied (a None value removes the field)."""
    body = payload(0, "photography")
    del body["user_id"]
    body.update(change)
    return {k: v for k, v in body.items() if v is not None}


def with_image(data: bytes) -> dict[str, Any]:
    return submit(images={"person": b64(data)})


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def raw(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


# (name, who, method, path, request keywords, allowed statuses)
Case = tuple[str, str, str, str, dict[str, Any], set[int]]
SSRF = [
    "http://127.0.0.1:9/hook",
    "http://localhost:9/hook",
    "http://[::1]:9/hook",
    "http://[::ffff:127.0.0.1]:9/hook",
    "http://[::ffff:0:127.0.0.1]:9/hook",
    "http://[::127.0.0.1]:9/hook",
    "http://[64:ff9b::10.0.0.1]:9/hook",
    "http://[64:ff9b:1::a00:1]:9/hook",
    "http://[2002:a00:1::1]:9/hook",
    "http://[fec0::1]:9/hook",
    "http://[fe80::1]:9/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/hook",
    "http://192.168.1.1/hook",
    "http://0.0.0.0:9/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:9/x",
    "ftp://example.com/x",
    "http://user:pass@127.0.0.1:9/",
]


def cases() -> list[Case]:
    """Every hostile request, by name."""
    sub = ("mallory", "POST", "/v1/tasks")
    found: list[Case] = [
        ("malformed json", *sub, raw('{"kind": "photography", '), {400}),
        ("json array", *sub, raw("[]"), {422}),
        ("json string", *sub, raw('"hi"'), {422}),
        (
            "not json",
            *sub,
            {"content": b"kind=photography", "headers": {"content-type": "text/plain"}},
            {400, 415, 422},
        ),
        ("deep json body", *sub, raw('{"x": ' + "[" * 50_000 + "]" * 50_000 + "}"), {400, 413, 422}),
        ("deep json options", *sub, {"json": submit(options=nested(600))}, {422}),
        ("options unknown name", *sub, {"json": submit(options={"temperature": 2})}, {422}),
        ("options bad ratio", *sub, {"json": submit(options={"aspect_ratio": "1:1000"})}, {422}),
        ("options list", *sub, {"json": submit(options=[1, 2])}, {422}),
        ("kind unknown", *sub, {"json": submit(kind="video")}, {422}),
        ("kind wrong type", *sub, {"json": submit(kind=5)}, {422}),
        ("images wrong type", *sub, {"json": submit(images="abc")}, {422}),
        ("prompt wrong type", *sub, {"json": submit(prompt=["a"])}, {422}),
        ("extra field", *sub, {"json": submit(price=0)}, {422}),
        ("fitting without garment", *sub, {"json": submit(kind="fitting")}, {422}),
        ("prompt too long", *sub, {"json": submit(prompt="a" * 100_000)}, {413, 422}),
        (
            "prompt lone surrogate",
            *sub,
            raw(json.dumps(submit(prompt="x")).replace('"prompt": "x"', '"prompt": "\\ud800"')),
            {422},
        ),
        ("prompt NUL", *sub, {"json": submit(prompt="a\x00b")}, {422}),
        ("prompt escape sequence", *sub, {"json": submit(prompt="a\x1b[2Jb")}, {422}),
        ("field name surrogate", *sub, raw('{"\\udfff": 1, "kind": "photography"}'), {422}),
        ("bad base64", *sub, {"json": submit(images={"person": "!!!not base64!!!"})}, {422}),
        ("empty image", *sub, {"json": submit(images={"person": ""})}, {422}),
        ("text as image", *sub, {"json": with_image(b"GIF89a hello world" * 10)}, {422}),
        ("svg as image", *sub, {"json": with_image(b'<svg xmlns="http://www.w3.org/2000/svg"/>')}, {422}),
        ("gif as image", *sub, {"json": with_image(gif())}, {422}),
        ("decompression bomb", *sub, {"json": with_image(bomb())}, {422}),
        ("garbage png", *sub, {"json": with_image(garbage_png())}, {422}),
        ("cut jpeg", *sub, {"json": with_image(cut_jpeg())}, {422}),
        (
            "huge body",
            *sub,
            {"content": b" " * (31 * 1024 * 1024), "headers": {"content-type": "application/json"}},
            {413},
        ),
        ("user id for another", *sub, {"json": submit(user_id="alice")}, {403}),
        ("user id bad characters", *sub, {"json": submit(user_id="a/../../b")}, {403, 422}),
        ("user id with newline", *sub, {"json": submit(user_id="mallory\nadmin")}, {403, 422}),
        ("webhook from a user", *sub, {"json": submit(webhook_url="https://example.com/h")}, {403}),
        ("idempotency key bad", *sub, {"json": submit(idempotency_key="a b")}, {422}),
        (
            "idempotency header differs",
            *sub,
            {"json": submit(idempotency_key="k1"), "headers": {"Idempotency-Key": "k2"}},
            {400},
        ),
        (
            "idempotency header bad",
            *sub,
            {"json": submit(), "headers": {"Idempotency-Key": "../../x"}},
            {422},
        ),
        ("no token", "", "POST", "/v1/tasks", {"json": submit()}, {401}),
        (
            "basic auth",
            "",
            "POST",
            "/v1/tasks",
            {"json": submit(), "headers": {"Authorization": "Basic YTpi"}},
            {401},
        ),
        ("revoked token", "revoked", "POST", "/v1/tasks", {"json": submit()}, {401}),
        ("altered token", "altered", "POST", "/v1/tasks", {"json": submit()}, {401}),
        (
            "bearer with spaces",
            "",
            "POST",
            "/v1/tasks",
            {"json": submit(), "headers": {"Authorization": "Bearer a b c"}},
            {401},
        ),
        ("metrics token reads the api", "metrics", "GET", "/v1/me", {}, {403}),
        ("metrics token submits", "metrics", "POST", "/v1/tasks", {"json": submit(user_id="x")}, {403}),
        ("metrics as service", "svc", "GET", "/metrics", {}, {403}),
        (
            "scoped service outside its users",
            "scoped",
            "POST",
            "/v1/tasks",
            {"json": submit(user_id="victim")},
            {403},
        ),
        ("scoped service reads another", "scoped", "GET", "/v1/me?user_id=victim", {}, {403}),
        ("queue as user", "mallory", "GET", "/v1/queue", {}, {403}),
        ("metrics as user", "mallory", "GET", "/metrics", {}, {403}),
        (
            "grant as user",
            "mallory",
            "POST",
            "/v1/admin/credits",
            {"json": {"user_id": "mallory", "amount": 10}},
            {403},
        ),
        (
            "grant negative",
            "root",
            "POST",
            "/v1/admin/credits",
            {"json": {"user_id": "mallory", "amount": -10}},
            {422},
        ),
        (
            "grant huge",
            "root",
            "POST",
            "/v1/admin/credits",
            {"json": {"user_id": "mallory", "amount": 10**30}},
            {422},
        ),
        (
            "grant reason NUL",
            "root",
            "POST",
            "/v1/admin/credits",
            {"json": {"user_id": "mallory", "amount": 1, "reason": "\x00"}},
            {422},
        ),
        ("me for another", "mallory", "GET", "/v1/me?user_id=alice", {}, {403}),
        ("me bad user id", "root", "GET", "/v1/me?user_id=%00", {}, {422}),
        ("task id traversal", "mallory", "GET", "/v1/tasks/..%2F..%2Fetc%2Fpasswd", {}, {404, 422}),
        ("task id dots", "mallory", "GET", "/v1/tasks/%2e%2e", {}, {404, 422}),
        ("task id too long", "mallory", "GET", "/v1/tasks/" + "a" * 64, {}, {404, 422}),
        ("task id upper", "mallory", "GET", "/v1/tasks/" + "A" * 32, {}, {404, 422}),
        ("task id glob", "mallory", "GET", "/v1/tasks/*", {}, {404, 422}),
        (
            "result traversal",
            "mallory",
            "GET",
            "/v1/tasks/..%2F..%2F..%2Fetc%2Fpasswd/result",
            {},
            {404, 422},
        ),
        ("static traversal", "", "GET", "/static/..%2F..%2Fapi.py", {}, {404}),
        ("static traversal dots", "", "GET", "/static/%2e%2e/%2e%2e/README.md", {}, {404}),
        ("method not allowed", "mallory", "PUT", "/v1/tasks", {"json": submit()}, {405}),
        ("unknown path", "mallory", "GET", "/v1/nothing-here", {}, {404}),
        (
            "watch bad last event id",
            "mallory",
            "GET",
            "/v1/tasks/" + "0" * 32 + "/watch",
            {"headers": {"Last-Event-ID": "x" * 1000}},
            {404, 422},
        ),
    ]
    found += [
        (
            "ssrf " + url,
            "svc",
            "POST",
            "/v1/tasks",
            {"json": submit(user_id="victim", webhook_url=url)},
            {422},
        )
        for url in SSRF
    ]
    return found


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (16, 16), 0).save(buf, "GIF")
    return buf.getvalue()


def check_problem(response: httpx.Response, allowed: set[int], secrets: list[str]) -> dict[str, Any]:
    """The response is one of the allowed 4xx, as problem+json naming its status, with nothing leaked."""
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code and body["title"] and body["detail"]
    text = response.text
    for leak in ("Traceback", "site-packages", "/work/", "RayTaskError", *secrets):
        assert leak not in text, (leak, text[:300])
    return body


@pytest.mark.parametrize("case", cases(), ids=lambda c: c[0])
def test_a_hostile_request_is_a_4xx_problem_that_leaks_nothing(hostile: Hostile, case: Case) -> None:
    """The request is refused with the expected 4xx problem+json, names no secret, no path and
    no traceback, and charges nothing."""
    name, who, method, path, kwargs, allowed = case
    tokens = hostile.tokens
    headers = dict(kwargs.pop("headers", {}))
    if who == "altered":
        token = tokens["mallory"]
        headers["Authorization"] = f"Bearer {token[:-1]}{'A' if token[-1] != 'A' else 'B'}"
    elif who:
        headers.setdefault("Authorization", f"Bearer {tokens[who]}")
    with httpx.Client(base_url=hostile.live.api_url, timeout=60) as client:
        before = balance(client, hostile)
        response = client.request(method, path, headers=headers, **kwargs)
        hostile.results.append((name, response.status_code))
        check_problem(response, allowed, [t for t in tokens.values()])
        assert balance(client, hostile) == before


def balance(client: httpx.Client, hostile: Hostile) -> int:
    me = client.get("/v1/me", headers=hostile.headers("mallory"))
    assert me.status_code == 200, me.text
    return int(me.json()["balance"])


def test_another_users_task_is_a_404_for_every_verb(hostile: Hostile) -> None:
    """Mallory cannot see, watch, read the log or result of, or cancel Alice's task: each is a
    404 problem, the same as for a task that does not exist."""
    task = hostile.alice_task
    with httpx.Client(base_url=hostile.live.api_url, timeout=30, headers=hostile.headers("mallory")) as c:
        for method, path in (
            ("GET", f"/v1/tasks/{task}"),
            ("GET", f"/v1/tasks/{task}/events"),
            ("GET", f"/v1/tasks/{task}/result"),
            ("GET", f"/v1/tasks/{task}/watch"),
            ("DELETE", f"/v1/tasks/{task}"),
        ):
            response = c.request(method, path)
            hostile.results.append((f"{method} {path}", response.status_code))
            check_problem(response, {404}, [])


def test_a_trailing_slash_never_redirects_to_the_host_a_caller_names(hostile: Hostile) -> None:
    """A request with a forged Host header gets no Location that points to that host."""
    with httpx.Client(base_url=hostile.live.api_url, timeout=30, follow_redirects=False) as c:
        response = c.get("/v1/tasks/", headers={"Host": "evil.example", **hostile.headers("mallory")})
    hostile.results.append(("trailing slash", response.status_code))
    assert response.status_code < 500
    assert "evil.example" not in response.headers.get("location", "")


def test_afterwards_the_instance_is_ready_serves_valid_work_and_audits_clean(hostile: Hostile) -> None:
    """After every hostile case: no 5xx was seen, /readyz is ready, a valid submit succeeds, and
    the whole log passes the audit."""
    server_errors = [r for r in hostile.results if r[1] >= 500]
    print(f"hostile suite: {len(hostile.results)} cases, {len(server_errors)} 5xx")
    assert not server_errors
    with httpx.Client(base_url=hostile.live.api_url, timeout=30, headers=hostile.headers("mallory")) as c:
        assert c.get("/readyz").status_code == 200
        answer = c.post("/v1/tasks", json=submit())
        assert answer.status_code == 202, answer.text
        task = answer.json()["task_id"]

        def ended() -> bool:
            return c.get(f"/v1/tasks/{task}").json()["status"] == "succeeded"

        eventually(ended, timeout=60, what="the valid task succeeded")
        assert balance(c, hostile) == MALLORY_CREDITS - 1
    config = hostile.live.config
    result = run_async(lambda: run_audit(config.redis.url, config.redis.namespace))
    assert result.violations == []
