"""What a submit may carry, over HTTP on a real Valkey: options, field sizes, text, images, and
what a refused or failed submit leaves in blob storage.

The app runs under uvicorn in a thread with no actors, as in test_api_guard: nothing is
dispatched, so submitted tasks stay waiting.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from PIL import Image

from actors.config import Config, CreditsConfig, LimitsConfig
from events.catalogue import CreditsGranted, TaskSubmitted
from events.keys import Keys
from serve_app.http.auth import new_token
from tests.helpers import append_to, log_of, make_config, with_store
from tests.served import served

LIMITS = LimitsConfig(max_fields_bytes=4096, max_image_pixels=1_000_000, max_image_side=1500)


class App:
    """A served app, an admin token on it, and what a test checks after each request."""

    def __init__(self, config: Config, url: str) -> None:
        self.config, self.url = config, url
        secret, event = new_token("root", "admin")
        append_to(config, [event])
        self.admin = {"Authorization": f"Bearer {secret}"}
        self.blobs = Path(config.server.data_dir) / "blobs"

    def user(self, credits: int = 0) -> str:
        """A new user id, granted `credits`."""
        user = f"u-{uuid.uuid4().hex[:8]}"
        if credits:
            append_to(self.config, [CreditsGranted(user_id=user, amount=credits, by="test", at=time.time())])
        return user

    def balance(self, user: str) -> int:
        """The user's balance, read from the store."""
        totals, _ = with_store(self.config, lambda store: store.user(user, entries=0))
        return int(totals.get("balance", 0))

    def blob_paths(self) -> set[str]:
        """Every file and folder under the blob root."""
        return {str(p.relative_to(self.blobs)) for p in self.blobs.rglob("*")}


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    base = make_config(
        store_url,
        str(tmp_path_factory.mktemp("submits")),
        auth=True,
        credits=CreditsConfig(default_grant=0),
        per_user_waiting=2,
    )
    config = replace(base, limits=LIMITS)
    with served(config) as running:
        app = App(config, running.url)
        with httpx.Client(base_url=app.url, timeout=30, headers=app.admin) as client:
            # One accepted task, so that the blob root exists before any test looks at it.
            assert client.post("/v1/tasks", json=body(user_id=app.user(credits=1))).status_code == 202
        yield app


def encoded(fmt: str, size: tuple[int, int] = (64, 64), noise: bool = False) -> bytes:
    image = Image.effect_noise(size, 60).convert("RGB") if noise else Image.new("RGB", size, (9, 99, 199))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(**fields: Any) -> dict[str, Any]:
    return {
        "kind": "photography",
        "prompt": "film portrait",
        "images": {"person": b64(encoded("PNG"))},
        **fields,
    }


def raw(value: dict[str, Any]) -> bytes:
    """JSON with every non-ASCII character escaped, so lone surrogates travel as `\\ud800`."""
    return json.dumps(value).encode()


def png_with_garbage_pixels() -> bytes:
    """A PNG whose chunks all carry valid CRCs but whose pixel data is not a zlib stream."""
    data = encoded("PNG")
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    junk = b"\x78\x9c" + b"\xff" * 64
    chunk = struct.pack(">I", len(junk)) + b"IDAT" + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk))
    return data[:start] + chunk + data[start + 12 + length :]


def refused(r: httpx.Response, status: int, field: str) -> dict[str, Any]:
    """The problem body of a refusal with `status` whose errors name `field`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = r.json()
    assert problem["status"] == status and problem["detail"]
    assert field in [e["field"] for e in problem.get("errors") or []], problem
    return problem


def submitted_options(app: App, task_id: str) -> dict[str, Any]:
    events = [s.event for s in log_of(app.config)]
    return next(e.options for e in events if isinstance(e, TaskSubmitted) and e.task_id == task_id)


def test_options_outside_the_closed_schema_are_422_naming_the_field(app: App) -> None:
    """Nested, unknown or out-of-range options are a 422 naming the option; nothing is charged or stored."""
    user = app.user(credits=5)
    deep: dict[str, Any] = {}
    for _ in range(600):
        deep = {"a": deep}
    cases = [
        (deep, "options.a"),
        ({"style": "noir"}, "options.style"),
        ({"aspect_ratio": "7:3"}, "options.aspect_ratio"),
        ({"aspect_ratio": ["1:1"]}, "options.aspect_ratio"),
        ({"seed": -1}, "options.seed"),
        ({"seed": 2**31}, "options.seed"),
        ({"seed": "5"}, "options.seed"),
        ({"seed": 1.5}, "options.seed"),
        ({"seed": True}, "options.seed"),
        ([1, 2], "options"),
    ]
    blobs = app.blob_paths()
    with httpx.Client(base_url=app.url, timeout=30, headers=app.admin) as client:
        for options, field in cases:
            refused(client.post("/v1/tasks", json=body(user_id=user, options=options)), 422, field)
    assert app.balance(user) == 5 and app.blob_paths() == blobs


def test_options_are_documented_and_stored_as_a_flat_dict(app: App) -> None:
    """The OpenAPI schema names every option; an accepted task's event keeps only the options given."""
    with httpx.Client(base_url=app.url, timeout=30, headers=app.admin) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]["Options"]
        assert schema["additionalProperties"] is False
        assert set(schema["properties"]) == {"aspect_ratio", "seed"}
        for options, stored in (
            ({"aspect_ratio": "16:9", "seed": 7}, {"aspect_ratio": "16:9", "seed": 7}),
            ({"aspect_ratio": "4:5", "seed": None}, {"aspect_ratio": "4:5"}),
            (None, {}),
        ):
            sent = body(user_id=app.user(credits=1))
            if options is not None:
                sent["options"] = options
            r = client.post("/v1/tasks", json=sent)
            assert r.status_code == 202, r.text
            assert submitted_options(app, r.json()["task_id"]) == stored


def test_fields_over_max_fields_bytes_are_413_naming_the_limit(app: App) -> None:
    """A body whose fields besides the images exceed max_fields_bytes is a 413 naming the limit."""
    user = app.user(credits=5)
    blobs = app.blob_paths()
    with httpx.Client(base_url=app.url, timeout=30, headers=app.admin) as client:
        # 1,500 characters, within max_prompt_chars, but 6,000 bytes of UTF-8.
        big = client.post("/v1/tasks", json=body(user_id=user, prompt="\U0001f600" * 1500))
        assert "max_fields_bytes" in refused(big, 413, "prompt")["detail"]
        assert app.balance(user) == 5 and app.blob_paths() == blobs
        fits = client.post("/v1/tasks", json=body(user_id=user, prompt="x" * 2000))
        assert fits.status_code == 202, fits.text


def test_lone_surrogates_and_control_characters_are_422_naming_the_field(app: App) -> None:
    """Invalid Unicode or a control character in any text field is a 422 naming it, never a 500."""
    user = app.user(credits=5)
    cases: list[tuple[dict[str, Any], str]] = [
        (body(user_id=user, prompt="warm \ud800 light"), "prompt"),
        (body(user_id=user, prompt="warm\x00light"), "prompt"),
        (body(user_id=user, prompt="\x1b[31mred"), "prompt"),
        (body(user_id=user, prompt="next\x85line"), "prompt"),
        (body(user_id=user + "\ud800"), "user_id"),
        (body(user_id=user + "\x00"), "user_id"),
        (body(user_id=user, idempotency_key="k\ud800"), "idempotency_key"),
        (body(user_id=user, idempotency_key="k\x07"), "idempotency_key"),
        (body(user_id=user, webhook_url="https://example.com/\ud800"), "webhook_url"),
        (body(user_id=user, webhook_url="https://exa\nmple.com/hook"), "webhook_url"),
        (body(user_id=user, images={"person": "\ud800"}), "images.person"),
        ({**body(user_id=user), "\ud800": 1}, "body"),
        (body(user_id=user, options={"\ud800": 1}), "options"),
        (body(user_id=user, images={"person": b64(encoded("PNG")), "\ud800x": "a"}), "images"),
    ]
    grants: list[tuple[dict[str, Any], str]] = [
        ({"user_id": user, "amount": 1, "reason": "r\ud800"}, "reason"),
        ({"user_id": user, "amount": 1, "reason": "r\x00"}, "reason"),
        ({"user_id": user + "\udfff", "amount": 1}, "user_id"),
    ]
    blobs = app.blob_paths()
    json_headers = {**app.admin, "content-type": "application/json"}
    with httpx.Client(base_url=app.url, timeout=30, headers=json_headers) as client:
        for sent, field in cases:
            refused(client.post("/v1/tasks", content=raw(sent)), 422, field)
        for sent, field in grants:
            refused(client.post("/v1/admin/credits", content=raw(sent)), 422, field)
        assert app.balance(user) == 5 and app.blob_paths() == blobs
        lines = client.post("/v1/tasks", content=raw(body(user_id=user, prompt="one\r\ntwo\tthree")))
        assert lines.status_code == 202, lines.text


def test_images_that_do_not_decode_are_422_naming_the_field(app: App) -> None:
    """A JPEG cut short or a PNG with garbage pixel data is a 422 naming its field; nothing is charged."""
    user = app.user(credits=5)
    jpeg = encoded("JPEG", noise=True)
    person = b64(encoded("PNG"))
    cases = [
        (body(user_id=user, images={"person": b64(jpeg[: len(jpeg) * 4 // 5])}), "images.person"),
        (body(user_id=user, images={"person": b64(png_with_garbage_pixels())}), "images.person"),
        (
            {**body(user_id=user, kind="fitting"), "images": {"person": person, "garment": b64(jpeg[:-300])}},
            "images.garment",
        ),
    ]
    blobs = app.blob_paths()
    with httpx.Client(base_url=app.url, timeout=30, headers=app.admin) as client:
        for sent, field in cases:
            assert "decode" in refused(client.post("/v1/tasks", json=sent), 422, field)["detail"]
    assert app.balance(user) == 5 and app.blob_paths() == blobs


def test_refused_and_failed_submits_leave_nothing_in_blob_storage(app: App) -> None:
    """After a 402, 429, 409, 422 or a store failure the blob root holds exactly what it held before."""
    broke, rich = app.user(credits=0), app.user(credits=10)
    with httpx.Client(base_url=app.url, timeout=30, headers=app.admin) as client:
        for key in ("k1", "k2"):  # the per-user backlog bound is 2
            assert client.post("/v1/tasks", json=body(user_id=rich, idempotency_key=key)).status_code == 202
        blobs = app.blob_paths()
        assert client.post("/v1/tasks", json=body(user_id=broke)).status_code == 402
        assert client.post("/v1/tasks", json=body(user_id=rich)).status_code == 429
        conflict = client.post("/v1/tasks", json=body(user_id=rich, idempotency_key="k1", prompt="other"))
        refused(conflict, 409, "idempotency_key")
        replay = client.post("/v1/tasks", json=body(user_id=rich, idempotency_key="k1"))
        assert replay.headers["idempotent-replayed"] == "true"
        off = client.post("/v1/tasks", json=body(user_id=rich, webhook_url="https://example.com/hook"))
        refused(off, 422, "webhook_url")  # webhooks are off on this server
        assert app.blob_paths() == blobs
        assert (app.balance(broke), app.balance(rich)) == (0, 8)

        # A store that fails inside the submit: its waiting set replaced by a string.
        waiting = Keys(app.config.redis.namespace).waiting
        valkey = redis.Redis.from_url(app.config.redis.url)
        saved = valkey.dump(waiting)
        valkey.set(waiting, "not a sorted set")
        try:
            failed = client.post("/v1/tasks", json=body(user_id=(user := app.user(credits=5))))
        finally:
            valkey.delete(waiting)
            if saved is not None:
                valkey.restore(waiting, 0, saved)
            valkey.close()
        assert failed.status_code == 500 and failed.headers["content-type"] == "application/problem+json"
        assert app.blob_paths() == blobs and app.balance(user) == 5
