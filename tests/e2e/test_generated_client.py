"""The schema is the contract: a client generated from the live `/openapi.json` by a standard
generator (openapi-python-client) submits, reads, and gets each refusal parsed as the problem
type the schema declares for it.

The app runs under uvicorn in a thread on a real Valkey, with no actors (tests/served.py): a
submitted task stays queued.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from actors.config import CreditsConfig
from events.catalogue import CreditsGranted
from serve_app.cli.burst import payload
from tests.helpers import append_to, make_config
from tests.served import App, served

PACKAGE = "genqueue_openapi_client"  # not clients/python's genqueue_client
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
SETTINGS = {
    "project_name_override": "genqueue-openapi-client",
    "package_name_override": PACKAGE,
    # Results are images: read as bytes, as the generator reads application/octet-stream.
    "content_type_overrides": {
        t: "application/octet-stream" for t in ("image/png", "image/jpeg", "image/webp")
    },
}


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app with tokens and credits on, for this module."""
    config = make_config(
        store_url, str(tmp_path_factory.mktemp("client-data")), auth=True, credits=CreditsConfig(enabled=True)
    )
    with served(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(app: App, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package generated from the live schema, imported."""
    if not GENERATOR.exists():
        pytest.fail(f"no {GENERATOR}: pip install -e '.[dev]' installs openapi-python-client")
    folder = tmp_path_factory.mktemp("generated")
    schema = folder / "openapi.json"
    schema.write_bytes(httpx.get(f"{app.url}/openapi.json", timeout=30).content)
    settings = folder / "settings.json"
    settings.write_text(json.dumps(SETTINGS))
    began = time.perf_counter()
    command: list[str | Path] = [GENERATOR, "generate", "--path", schema, "--config", settings]
    done = subprocess.run(
        [*command, "--meta", "none", "--output-path", folder / PACKAGE],
        capture_output=True,
        text=True,
        timeout=120,
        # The generator formats its output with ruff, the venv's.
        env={**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    print(f"generated {PACKAGE} in {time.perf_counter() - began:.2f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout  # every operation and response generated
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def part(name: str) -> Any:
    """A module of the generated package, e.g. `api.tasks.submit_v1_tasks_post`."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def signed_in(client: ModuleType, app: App, user: str, credits: int = 0) -> Any:
    """A generated AuthenticatedClient with a new user token for `user`, granted `credits`."""
    header = app.token(user, "user")
    if credits:
        append_to(app.config, [CreditsGranted(user_id=user, amount=credits, by="test", at=time.time())])
    return client.AuthenticatedClient(base_url=app.url, token=header["Authorization"].removeprefix("Bearer "))


def submit_body(user: str, **images: str) -> Any:
    """A SubmitTask of the generated models, for `user`."""
    body = payload(1, "photography") | {"user_id": user}
    body["images"] |= images
    return part("models").SubmitTask.from_dict(body)


def test_the_generated_client_submits_and_reads_a_task(client: ModuleType, app: App) -> None:
    """A submit is a 202 parsed as Submitted; the task reads back queued as a TaskViewOut."""
    models = part("models")
    alice = signed_in(client, app, "alice", credits=5)
    with alice:
        sent = part("api.tasks.submit_v1_tasks_post").sync_detailed(client=alice, body=submit_body("alice"))
        assert sent.status_code == 202, sent.content
        assert isinstance(sent.parsed, models.Submitted) and sent.parsed.balance == 4
        view = part("api.tasks.get_task_v1_tasks_task_id_get").sync(task_id=sent.parsed.task_id, client=alice)
    assert isinstance(view, models.TaskViewOut)
    assert (view.task_id, view.user_id, view.status, view.price) == (
        sent.parsed.task_id,
        "alice",
        "queued",
        1,
    )


def test_refusals_parse_as_the_declared_problem_types(client: ModuleType, app: App) -> None:
    """No token: UnauthorizedProblem; no credits: InsufficientCreditsProblem with balance and
    price; an image that is not one: UnprocessableContentProblem; a malformed task id:
    InvalidRequestProblem naming the field."""
    models, get_task = part("models"), part("api.tasks.get_task_v1_tasks_task_id_get")
    submit = part("api.tasks.submit_v1_tasks_post")
    with client.Client(base_url=app.url) as anonymous:
        refused = get_task.sync_detailed(task_id="0" * 32, client=anonymous)
    assert refused.status_code == 401 and isinstance(refused.parsed, models.UnauthorizedProblem)
    assert refused.parsed.type_ == "/problems/unauthorized"

    with signed_in(client, app, "bob") as bob:
        poor = submit.sync_detailed(client=bob, body=submit_body("bob"))
        not_an_image = submit.sync_detailed(client=bob, body=submit_body("bob", person="aGVsbG8="))
        malformed = get_task.sync_detailed(task_id="not-an-id", client=bob)
    assert poor.status_code == 402 and isinstance(poor.parsed, models.InsufficientCreditsProblem)
    assert (poor.parsed.balance, poor.parsed.price) == (0, 1)
    assert poor.parsed.type_ == "/problems/insufficient-credits"
    assert not_an_image.status_code == 422
    assert isinstance(not_an_image.parsed, models.UnprocessableContentProblem)
    assert not_an_image.parsed.errors[0].field == "images.person"
    assert malformed.status_code == 422 and isinstance(malformed.parsed, models.InvalidRequestProblem)
    assert [e.field for e in malformed.parsed.errors] == ["path.task_id"]
