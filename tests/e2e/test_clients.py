"""The clients against one live genqueue (Ray Serve, actors, embedded Valkey, offline provider,
completion webhooks on): the TypeScript client's Node tests (`node --test`) and its built dist/
against its sources; the Python client's cases (`python_client_cases`); the worked example's
(`example_app_cases`). One instance serves them all: each starts in about 15 s on 2 cores."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from actors.config import CreditsConfig, LimitsConfig, WebhooksConfig
from actors.providers.images import sample_selfie
from events.catalogue import CreditsGranted, Event
from serve_app.http.auth import new_token
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.e2e.example_app_cases import (  # noqa: F401 (collected here, sharing `live`)
    SERVER_SECRET,
    finished,
    photo_app,
    test_a_forged_webhook_is_rejected_and_a_repeat_is_dropped,
    test_a_photo_genqueue_cannot_read_comes_back_as_its_problem,
    test_a_submit_for_a_user_ends_in_a_verified_webhook_and_a_reachable_result,
    test_another_user_cannot_read_the_task_and_its_owner_can_watch_it,
    test_the_page_follows_a_task_to_succeeded_with_the_typescript_client,
)
from tests.e2e.python_client_cases import (  # noqa: F401 (collected here, sharing `live`)
    test_a_submit_retried_through_a_dropped_connection_is_charged_once,
    test_a_waiting_task_is_cancelled_and_refunded,
    test_a_watch_cut_mid_message_resumes_without_a_loss_or_a_repeat,
    test_async_submit_and_wait,
    test_problems_are_raised_with_their_fields,
    test_submit_watch_result_and_credits,
)
from tests.e2e.test_inputs import GARMENT, PERSON, Site, limits_for, site, stored_inputs, url_body  # noqa: F401
from tests.helpers import append_to, eventually, make_config

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "typescript"
DIST = CLIENT / "dist"
STATIC_COPY = ROOT / "serve_app" / "static" / "genqueue-client"
TSC = CLIENT / "node_modules" / ".bin" / "tsc"
NODE = shutil.which("node")
# The users the Node tests act as (each test its own, so that balances add up), with their credits.
USERS = {"alice": 20, "bob": 5, "carol": 3, "dave": 3, "erin": 3, "frank": 3, "broke": 0}
# The users a service token submits for, to queue tasks ahead of a test's own: 30 per test.
CROWD = [f"ts-crowd-{i}" for i in range(60)]


def files(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(suffixes))


def test_the_page_imports_the_built_client() -> None:
    """dist/ is the page's module folder itself (a link), so the page serves exactly what was built."""
    assert DIST.is_symlink() and DIST.resolve() == STATIC_COPY.resolve()
    assert "genqueue-client.js" in files(STATIC_COPY, (".js",))


def test_dist_is_built_from_the_sources(tmp_path: Path) -> None:
    """tsc builds src/ into exactly the committed dist/ (JavaScript and declarations)."""
    if not TSC.exists():
        pytest.skip(f"typescript is not installed ({TSC} missing): run `npm ci` in {CLIENT} to check dist/")
    if NODE is None:
        pytest.skip("no node on PATH: cannot run tsc")
    out = tmp_path / "dist"
    built = subprocess.run(
        [str(TSC), "-p", "tsconfig.json", "--outDir", str(out)],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    names = files(out, (".js", ".d.ts"))
    assert files(DIST, (".js", ".d.ts")) == names, "run `make client`"
    _, mismatch, errors = filecmp.cmpfiles(out, DIST, names, shallow=False)
    assert not mismatch and not errors, f"dist/ is stale: {mismatch + errors}; run `make client`"


@pytest.fixture(scope="module")
def live(
    ray_session: None,
    store_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    site: Site,  # noqa: F811 (the fixture imported above)
) -> Iterator[Running]:
    """A genqueue with tokens and credits whose quota makes a line: two pools of 5 calls per 2 s;
    webhooks signed with a test secret, retried fast, loopback allowed (the example's)."""
    hooks = WebhooksConfig(
        secret=SERVER_SECRET,
        backoff_base=0.1,
        backoff_cap=0.5,
        max_seconds=30.0,
        allow_networks=("127.0.0.0/8",),
    )
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("ts-client")),
        slots=4,
        # Calls outlast the submits of a backlog (`python_client_cases.backlog`): 8 fillers on
        # 4 slots take two 0.3 s waves, so the task submitted after them still waits.
        latency=0.3,
        pools=(("project-a", 150, 2.0), ("project-b", 150, 2.0)),
        port=free_port(),
        auth=True,
        credits=CreditsConfig(photography=1, fitting=2),
    )
    # Image URLs of the test site (127.0.0.1, its CA) allowed; images of any size the API takes.
    limits = replace(limits_for(site), max_image_bytes=LimitsConfig().max_image_bytes)
    with running(replace(config, webhooks=hooks, limits=limits), dashboard=False) as r:
        yield r


def tokens(live: Running) -> dict[str, str]:
    """A token for each of USERS (as `ts-<name>`, granted its credits), a service token and an
    admin token; the crowd granted a credit a task."""
    secrets: dict[str, str] = {}
    events: list[Event] = []
    now = time.time()
    for name, role in [*((u, "user") for u in USERS), ("service", "service"), ("admin", "admin")]:
        user = f"ts-{name}" if role == "user" else f"ts-{role}"
        secret, event = new_token(user, role)
        secrets[name] = secret
        events.append(event)
        if credits := USERS.get(name, 0):
            events.append(CreditsGranted(user_id=user, amount=credits, by="test", at=now))
    events += [CreditsGranted(user_id=u, amount=1, by="test", at=now) for u in CROWD]
    append_to(live.config, events)
    return secrets


@pytest.mark.skipif(NODE is None, reason="no node on PATH: the TypeScript client's tests need Node 20+")
def test_the_typescript_client_against_a_live_genqueue(live: Running, tmp_path: Path) -> None:
    """`node --test` runs every test of the client against this genqueue: none fails, none skips."""
    photo = tmp_path / "selfie.png"
    photo.write_bytes(sample_selfie(11))
    env = {
        **os.environ,
        "GQTEST_URL": live.api_url,
        "GQTEST_TOKENS": json.dumps(tokens(live)),
        "GQTEST_IMAGE": str(photo),
        "GQTEST_CROWD": ",".join(CROWD),
    }
    tests = sorted(str(p.relative_to(CLIENT)) for p in (CLIENT / "test").glob("*.test.mjs"))
    started = time.monotonic()
    run = subprocess.run(
        [str(NODE), "--test", "--test-concurrency=1", "--test-reporter=tap", *tests],
        cwd=CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - started
    summary = re.findall(r"^# (tests|pass|fail|skipped|cancelled) (\d+)$", run.stdout, re.M)
    counts = {name: int(n) for name, n in summary}
    print(f"node --test: {counts} in {took:.1f} s")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-4000:]
    assert counts.get("fail") == 0 and counts.get("cancelled") == 0, counts
    written = sum(len(re.findall(r"^test\(", (CLIENT / t).read_text(), re.M)) for t in tests)
    assert counts.get("skipped") == 0 and counts.get("pass") == written, (counts, written)


def test_an_upload_and_a_url_go_through_ray_serve_to_a_generated_image(
    live: Running,
    site: Site,  # noqa: F811 (the fixture imported above)
) -> None:
    """Through the Serve ingress and the actors: a multipart fitting and a photography by URL both
    succeed, and the worker was given the uploaded and the served bytes."""
    secret, created = new_token("inputs-user", "user")
    append_to(live.config, [created, CreditsGranted(user_id="inputs-user", amount=10, by="test", at=0.0)])
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=live.api_url, timeout=30, headers=headers) as client:
        files = {
            "person": ("me.png", PERSON, "image/png"),
            "garment": ("shirt.png", GARMENT, "image/png"),
        }
        upload = client.post("/v1/tasks", data={"kind": "fitting"}, files=files)
        by_url = client.post("/v1/tasks", json=url_body({"url": site.url("/person.png")}))
        assert (upload.status_code, by_url.status_code) == (202, 202), (upload.text, by_url.text)
        ids = [upload.json()["task_id"], by_url.json()["task_id"]]

        def ended() -> list[str]:
            statuses = [client.get(f"/v1/tasks/{t}").json()["status"] for t in ids]
            return statuses if all(s in ("succeeded", "failed") for s in statuses) else []

        assert eventually(ended, timeout=120, what="both tasks ended") == ["succeeded", "succeeded"]
    assert stored_inputs(live.config, ids[0]) == {"person": PERSON, "garment": GARMENT}
    assert stored_inputs(live.config, ids[1]) == {"person": PERSON}
