"""Images as users send them, over HTTP on a real Valkey: multipart uploads, and https URLs that
genqueue fetches from a local server whose certificate a test CA signed.

The app runs under uvicorn in a thread with no actors (tests/served.py): submitted tasks stay
waiting, and what a submit stored or charged is read from the blob root and the API.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import trustme
from PIL import Image

from actors.config import Config, CreditsConfig, LimitsConfig
from events.catalogue import CreditsGranted, TaskSubmitted
from serve_app.http.fetch import Fetcher
from tests.helpers import append_to, log_of, make_config
from tests.served import App, served

CAP = 100_000  # max_image_bytes
SECONDS = 1.5  # image_url_seconds


def png(size: tuple[int, int] = (64, 64), noise: bool = True) -> bytes:
    image = Image.effect_noise(size, 60).convert("RGB") if noise else Image.new("RGB", size, (9, 99, 199))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


PERSON, GARMENT = png(), png((48, 80))


class Images(BaseHTTPRequestHandler):
    """Serves the test images and the ways a URL can fail."""

    release: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.release.wait(30)  # answers nothing until the test module ends
            return
        if self.path == "/big":  # no Content-Length: only reading tells the size
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(4 * CAP // 16384):
                    self.wfile.write(b"\x89" * 16384)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the fetcher stopped reading at the cap
            return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/person.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = {"/person.png": PERSON, "/garment.png": GARMENT, "/text": b"hello, not an image"}.get(
            self.path
        )
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Site:
    """An https server on 127.0.0.1 whose certificate the test CA in `ca_file` signed."""

    def __init__(self, ca_file: Path, port: int) -> None:
        self.ca_file, self.port = ca_file, port

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    Images.release.clear()  # set when an earlier module's site closed
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    server.daemon_threads = True
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(ca_file, server.server_address[1])
    finally:
        Images.release.set()
        server.shutdown()
        thread.join(10)


class Inputs:
    """The served app, and a user of it with a token and credits."""

    def __init__(self, app: App) -> None:
        self.app = app

    def user(self, credits: int = 10) -> tuple[str, dict[str, str]]:
        """A new user with `credits`, and its token's headers."""
        user = f"u-{uuid.uuid4().hex[:8]}"
        append_to(self.app.config, [CreditsGranted(user_id=user, amount=credits, by="test", at=time.time())])
        return user, self.app.token(user, "user")

    def balance(self, headers: dict[str, str]) -> int:
        """The caller's balance, from GET /v1/me."""
        me = httpx.get(f"{self.app.url}/v1/me", headers=headers, timeout=30)
        assert me.status_code == 200, me.text
        return int(me.json()["balance"])

    def submits_of(self, user: str) -> list[TaskSubmitted]:
        """The user's task.submitted events in the log."""
        events = [s.event for s in log_of(self.app.config)]
        return [e for e in events if isinstance(e, TaskSubmitted) and e.user_id == user]

    def inputs_of(self, task_id: str) -> dict[str, bytes]:
        """The task's stored input images by role."""
        return stored_inputs(self.app.config, task_id)


def stored_inputs(config: Config, task_id: str) -> dict[str, bytes]:
    """A task's input images by role, read from the blob root its task.submitted names."""
    events = (s.event for s in log_of(config))
    event = next(e for e in events if isinstance(e, TaskSubmitted) and e.task_id == task_id)
    blobs = Path(config.server.data_dir) / "blobs"
    return {role: (blobs / ref).read_bytes() for role, ref in event.inputs.items()}


def limits_for(site: Site) -> LimitsConfig:
    """Images up to CAP bytes; URLs of 127.0.0.1 (not of the rest of 127.0.0.0/8) allowed and
    verified against the test CA, within SECONDS."""
    return replace(
        LimitsConfig(),
        max_image_bytes=CAP,
        image_url_seconds=SECONDS,
        image_url_connect_seconds=1.0,
        image_url_allow_networks=("127.0.0.1/32",),
        image_url_ca_file=str(site.ca_file),
    )


@pytest.fixture(scope="module")
def inputs(store_url: str, tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Inputs]:
    """The app alone, with tokens and credits on and the test limits."""
    base = make_config(
        store_url, str(tmp_path_factory.mktemp("inputs")), auth=True, credits=CreditsConfig(default_grant=0)
    )
    with served(replace(base, limits=limits_for(site))) as app:
        yield Inputs(app)


def post(inputs: Inputs, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{inputs.app.url}/v1/tasks", headers=headers, timeout=30, **kwargs)


def multipart(data: dict[str, str], files: dict[str, bytes]) -> tuple[str, bytes]:
    """(content type, body) of text parts and file parts, as a browser's FormData sends them
    (also with no file part at all, which httpx would send form-encoded)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'Content-Disposition: form-data; name="{n}"\r\n\r\n'.encode() + v.encode() for n, v in data.items()
    ]
    for name, content in files.items():
        head = f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        parts.append(head.encode() + b"Content-Type: image/png\r\n\r\n" + content)
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return f"multipart/form-data; boundary={boundary}", body + b"--" + boundary.encode() + b"--\r\n"


def refused(r: httpx.Response, status: int, field: str) -> dict[str, Any]:
    """The problem body of a refusal with `status` whose errors name `field`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = r.json()
    assert problem["status"] == status and problem["type"].startswith("/problems/")
    assert field in [e["field"] for e in problem.get("errors") or []], problem
    return problem


def test_a_multipart_fitting_is_queued_with_the_uploaded_bytes_and_charged_once_per_key(
    inputs: Inputs,
) -> None:
    """Two file parts and text fields give a 202; the stored inputs are the uploaded bytes, the
    options and prompt are kept; a repeat under the same key is the same task, charged once, and
    a different image under it a 409."""
    user, headers = inputs.user(credits=10)
    data = {"kind": "fitting", "prompt": "linen, summer", "options": '{"seed": 7}', "idempotency_key": "k-1"}
    files = {"person": ("me.png", PERSON, "image/png"), "garment": ("shirt.png", GARMENT, "image/png")}
    first = post(inputs, headers, data=data, files=files)
    assert first.status_code == 202, first.text
    task_id = first.json()["task_id"]
    assert first.json()["balance"] == 8
    assert inputs.inputs_of(task_id) == {"person": PERSON, "garment": GARMENT}
    event = inputs.submits_of(user)[0]
    assert (event.kind, event.prompt, event.options) == ("fitting", "linen, summer", {"seed": 7})

    again = post(inputs, headers, data=data, files=files)
    assert again.status_code == 202 and again.json()["task_id"] == task_id
    assert again.headers["idempotent-replayed"] == "true"
    other = {**files, "garment": ("shirt.png", png((32, 32)), "image/png")}
    refused(post(inputs, headers, data=data, files=other), 409, "idempotency_key")
    assert inputs.balance(headers) == 8 and len(inputs.submits_of(user)) == 1


@pytest.mark.parametrize(
    ("data", "files", "status", "field"),
    [
        ({"kind": "fitting"}, {"person": PERSON}, 422, "images.garment"),
        ({"kind": "photography"}, {}, 422, "images.person"),
        ({"kind": "photography"}, {"person": b"\x89PNG not really"}, 422, "images.person"),
        ({"kind": "photography", "person": "text, not a file"}, {}, 422, "images.person"),
        ({"kind": "photography", "options": "{seed"}, {"person": PERSON}, 422, "options"),
        ({"kind": "photography", "style": "noir"}, {"person": PERSON}, 422, "style"),
        ({"kind": "photography"}, {"person": PERSON, "hat": PERSON}, 422, "hat"),
        ({"kind": "photography"}, {"person": b"\x89" * (CAP + 1)}, 413, "images.person"),
    ],
    ids=[
        "missing-garment",
        "missing-person",
        "not-an-image",
        "text-part",
        "options",
        "unknown",
        "hat",
        "over-cap",
    ],
)
def test_a_multipart_submit_that_cannot_be_a_task_is_a_problem_naming_the_part(
    inputs: Inputs, data: dict[str, str], files: dict[str, bytes], status: int, field: str
) -> None:
    """A missing role, an unreadable image, a role as text, bad options, an unknown part or an
    image over max_image_bytes is refused naming it; nothing is charged or logged."""
    user, headers = inputs.user(credits=10)
    content_type, body = multipart(data, files)
    refused(post(inputs, {**headers, "content-type": content_type}, content=body), status, field)
    assert inputs.balance(headers) == 10 and inputs.submits_of(user) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"garbage, not parts"),
        ("multipart/form-data", b"--xyz\r\n\r\n--xyz--\r\n"),
        (
            "multipart/form-data; boundary=xyz",
            b"--xyz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--xyz--\r\n",
        ),
    ],
    ids=["garbage", "no-boundary", "no-name"],
)
def test_a_body_that_is_not_multipart_is_a_400(inputs: Inputs, content_type: str, body: bytes) -> None:
    """Garbage, a missing boundary or a part without a name is a 400 problem; nothing is charged."""
    user, headers = inputs.user(credits=10)
    r = post(inputs, {**headers, "content-type": content_type}, content=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json" and "multipart" in r.json()["detail"]
    assert inputs.balance(headers) == 10 and inputs.submits_of(user) == []


def url_body(person: str | dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"kind": "photography", "prompt": "film portrait", "images": {"person": person}, **fields}


def test_an_https_url_is_fetched_and_its_bytes_stored(inputs: Inputs, site: Site) -> None:
    """A fitting whose two images are URLs is queued and charged, and its stored images are the
    served ones."""
    user, headers = inputs.user(credits=10)
    body = {
        "kind": "fitting",
        "images": {"person": {"url": site.url("/person.png")}, "garment": {"url": site.url("/garment.png")}},
    }
    r = post(inputs, headers, json=body)
    assert r.status_code == 202, r.text
    assert inputs.inputs_of(r.json()["task_id"]) == {"person": PERSON, "garment": GARMENT}
    assert inputs.balance(headers) == 8 and len(inputs.submits_of(user)) == 1


@pytest.mark.parametrize(
    ("path", "host", "field", "reason"),
    [
        ("http", "127.0.0.1", "images.person", "must be an https URL"),
        ("/person.png", "127.0.0.2", "images.person", "127.0.0.2, a loopback address"),
        ("/slow", "127.0.0.1", "images.person", f"within {SECONDS:g} s"),
        ("/big", "127.0.0.1", "images.person", f"more than {CAP} bytes"),
        ("/text", "127.0.0.1", "images.person", "not a readable image"),
        ("/redirect", "127.0.0.1", "images.person", "redirects are not followed"),
        ("/gone", "127.0.0.1", "images.person", "HTTP 404"),
    ],
    ids=["http", "loopback", "slow", "oversize", "not-an-image", "redirect", "404"],
)
def test_a_url_that_fails_is_a_422_naming_the_field_and_charges_nothing(
    inputs: Inputs, site: Site, path: str, host: str, field: str, reason: str
) -> None:
    """http://, an address outside the allowed ones, a server slower than the time cap, a body
    over the size cap, a non-image, a redirect or a 404: a 422 naming the image and saying why;
    the balance is unchanged and nothing is logged."""
    user, headers = inputs.user(credits=10)
    url = f"http://{host}:{site.port}/person.png" if path == "http" else site.url(path, host)
    # The slow server never finishes: the answer naming the time cap shows the fetch was cut.
    problem = refused(post(inputs, headers, json=url_body({"url": url})), 422, field)
    assert reason in problem["detail"] or reason in str(problem["errors"]), problem
    assert inputs.balance(headers) == 10 and inputs.submits_of(user) == []


def test_a_batch_takes_no_image_urls(inputs: Inputs, site: Site) -> None:
    """A batch item with an image URL is refused on its own: a 422 naming the image."""
    admin = inputs.app.token("root", "admin")
    user, _ = inputs.user(credits=10)
    r = httpx.post(
        f"{inputs.app.url}/v1/tasks/batch",
        json={"tasks": [url_body({"url": site.url("/person.png")}, user_id=user)]},
        headers=admin,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    item = r.json()["results"][0]
    assert item["status"] == 422 and item["errors"][0]["field"] == "images.person"


def test_the_fetcher_verifies_tls_against_the_default_cas(site: Site) -> None:
    """Without the test CA, the local server's certificate is not trusted and nothing is fetched."""
    fetcher = Fetcher(replace(LimitsConfig(), image_url_allow_networks=("127.0.0.1/32",)))
    found = asyncio.run(fetcher.fetch(site.url("/person.png")))
    assert isinstance(found, str) and "CERTIFICATE_VERIFY_FAILED" in found, found


def test_the_schema_shows_the_json_and_the_multipart_body(inputs: Inputs) -> None:
    """POST /v1/tasks declares both request bodies, the image URL form and a 413."""
    schema = httpx.get(f"{inputs.app.url}/openapi.json", timeout=30).json()
    op = schema["paths"]["/v1/tasks"]["post"]
    content = op["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/SubmitTask"}
    upload = content["multipart/form-data"]["schema"]
    assert upload["properties"]["person"]["format"] == "binary" and "kind" in upload["required"]
    assert "ImageUrl" in schema["components"]["schemas"] and "413" in op["responses"]
