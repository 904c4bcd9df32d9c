"""Deadlines at submit over HTTP on a real Valkey: `deadline_seconds`, the Cancel-After header and
`if_late` in JSON, multipart and batch submits, the task view's deadline, and the 409
`deadline-unreachable` that charges and writes nothing.

Most tests serve the app in a thread with no actors (nothing is dispatched, so the queue only
grows): one slot and calls taken to last 4 s make every task behind a few others late for a
short deadline. The last one runs real actors, and checks that a task accepted with a deadline
(the shortest a 409 named, and a margin) did start its call by then.
"""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from genqueue_client import Client, Conflict, DeadlineUnreachable

from actors import factory
from actors.config import CreditsConfig
from events.public_view import iso
from serve_app.runtime import resolve
from tests.e2e.deadlines_helpers import (
    MARGIN_SECONDS,
    PNG,
    PROBLEM,
    UNREACHABLE,
    Served,
    counted_from_the_submit,
    served_as_admin,
    task,
)
from tests.helpers import eventually, make_config
from tests.served import served


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("deadlines")),
        auth=True,
        credits=CreditsConfig(default_grant=0),
        slots=1,
        latency=4.0,
    )
    with served_as_admin(config) as app:
        yield app


def test_a_deadline_is_kept_and_shown_in_the_task_view(app: Served) -> None:
    """From the body, the Cancel-After header or a multipart text part, the view shows the
    deadline (submit time plus the seconds asked) and its ISO 8601 form; none without one."""
    (user,) = app.users(1, credits=4)
    asked: list[tuple[dict[str, Any], float]] = [
        ({"json": task(user, deadline_seconds=3600)}, 3600.0),
        ({"json": task(user), "headers": {"Cancel-After": "1h30m"}}, 5400.0),
        (
            {
                "data": {"kind": "photography", "user_id": user, "deadline_seconds": "120"},
                "files": {"person": ("me.png", base64.b64decode(PNG), "image/png")},
                "headers": {"Cancel-After": "2m"},
            },
            120.0,
        ),
    ]
    for request, seconds in asked:
        answer = app.client.post("/v1/tasks", **request)
        assert answer.status_code == 202, answer.text
        assert answer.json()["eta_p90_seconds"] <= seconds
        view = app.view(answer.json()["task_id"])
        assert counted_from_the_submit(view, seconds)
        assert view["deadline_iso"] == iso(view["deadline"]) and view["deadline_iso"].endswith("Z")
    plain = app.client.post("/v1/tasks", json=task(user))
    assert plain.status_code == 202
    view = app.view(plain.json()["task_id"])
    assert view["deadline"] is None and view["deadline_iso"] is None
    assert app.balance(user) == 0


def test_a_bad_deadline_is_a_4xx_problem_naming_it(app: Served) -> None:
    """A Cancel-After that does not parse or is out of bounds is a 422 naming the header; a body
    value out of bounds or not a number a 422 naming the field; body and header that differ a
    400. Nothing is charged."""
    (user,) = app.users(1, credits=2)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": task(user), "headers": {"Cancel-After": "soon"}}, 422, "Cancel-After"),
        ({"json": task(user), "headers": {"Cancel-After": "0s"}}, 422, "Cancel-After"),
        ({"json": task(user), "headers": {"Cancel-After": "25h"}}, 422, "Cancel-After"),
        ({"json": task(user), "headers": {"Cancel-After": "1s1h"}}, 422, "Cancel-After"),
        ({"json": task(user, deadline_seconds=0)}, 422, "deadline_seconds"),
        ({"json": task(user, deadline_seconds=86_401)}, 422, "deadline_seconds"),
        ({"json": task(user, deadline_seconds="30")}, 422, "deadline_seconds"),
        ({"json": task(user, if_late="maybe")}, 422, "if_late"),
        (
            {"json": task(user, deadline_seconds=30), "headers": {"Cancel-After": "1m"}},
            400,
            "deadline_seconds",
        ),
        (
            {
                "data": {"kind": "photography", "user_id": user, "deadline_seconds": "30"},
                "files": {"person": ("me.png", base64.b64decode(PNG), "image/png")},
                "headers": {"Cancel-After": "31s"},
            },
            400,
            "deadline_seconds",
        ),
        (
            {
                "data": {"kind": "photography", "user_id": user, "deadline_seconds": "soon"},
                "files": {"person": ("me.png", base64.b64decode(PNG), "image/png")},
            },
            422,
            "deadline_seconds",
        ),
    ]
    for request, status, field in cases:
        answer = app.client.post("/v1/tasks", **request)
        assert answer.status_code == status, (request.get("headers"), answer.text)
        assert answer.headers["content-type"] == PROBLEM
        problem = answer.json()
        assert problem["status"] == status and field in [e["field"] for e in problem["errors"]], problem
    assert app.balance(user) == 2


def test_a_deadline_the_queue_cannot_meet_is_a_409_that_charges_and_writes_nothing(app: Served) -> None:
    """Behind eight tasks on one slot of 4 s calls, a 5 s deadline is refused with the ETA and
    the shortest deadline that would be met: no event, no charge, no image kept. That deadline,
    asked for next, is accepted with a p90 within it."""
    app.crowd(8)
    (user,) = app.users(1, credits=2)
    log, blobs = app.log_length(), app.blob_paths()
    late: list[dict[str, Any]] = [
        {"json": task(user, deadline_seconds=5)},
        {"json": task(user), "headers": {"Cancel-After": "5s"}},
    ]
    for request in late:
        problem = app.unreachable(app.client.post("/v1/tasks", **request))
        assert problem["deadline_seconds"] == 5
        assert problem["eta_p90_seconds"] > 5 and problem["eta_p90_seconds"] >= problem["eta_seconds"]
        assert problem["min_deadline_seconds"] == math.ceil(problem["eta_p90_seconds"])
    assert app.log_length() == log, "a refused deadline wrote to the log"
    assert app.balance(user) == 2
    assert app.blob_paths() == blobs
    need = problem["min_deadline_seconds"]
    answer = app.client.post("/v1/tasks", json=task(user, deadline_seconds=need))
    assert answer.status_code == 202, answer.text
    assert answer.json()["eta_p90_seconds"] <= need and answer.json()["balance"] == 1


def test_if_late_accept_queues_a_task_whose_eta_misses_its_deadline(app: Served) -> None:
    """`if_late: "accept"`: queued and charged with its deadline, its ETA said as it is."""
    app.crowd(2)
    (user,) = app.users(1, credits=1)
    answer = app.client.post("/v1/tasks", json=task(user, deadline_seconds=1, if_late="accept"))
    assert answer.status_code == 202, answer.text
    assert answer.json()["eta_p90_seconds"] > 1 and answer.json()["balance"] == 0
    view = app.view(answer.json()["task_id"])
    assert counted_from_the_submit(view, 1.0)


def test_a_repeat_under_its_idempotency_key_gets_its_task_even_when_now_late(app: Served) -> None:
    """A retried submit answers with the task its key named, however long the queue has grown
    since; the same request under a new key is then refused."""
    (user,) = app.users(1, credits=3)
    need = app.unreachable(app.client.post("/v1/tasks", json=task(user, deadline_seconds=1)))[
        "min_deadline_seconds"
    ]
    body = task(user, deadline_seconds=need)
    first = app.client.post("/v1/tasks", json=body, headers={"Idempotency-Key": "deadline-k1"})
    assert first.status_code == 202, first.text
    app.crowd(3)
    again = app.client.post("/v1/tasks", json=body, headers={"Idempotency-Key": "deadline-k1"})
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["task_id"] == first.json()["task_id"]
    app.unreachable(app.client.post("/v1/tasks", json=body, headers={"Idempotency-Key": "deadline-k2"}))
    assert app.balance(user) == 2


def test_a_batch_checks_each_items_deadline_at_its_own_place(app: Served) -> None:
    """Each item's deadline is checked where it would land; a refused item is its own 409 among
    the results, charged nothing, and the others are queued."""
    late, plain, far, accepting = app.users(4, credits=1)
    items = [
        task(late, deadline_seconds=1),
        task(plain),
        task(far, deadline_seconds=86_400),
        task(accepting, deadline_seconds=1, if_late="accept"),
    ]
    answer = app.client.post("/v1/tasks/batch", json={"tasks": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [409, 202, 202, 202]
    assert results[0]["type"] == UNREACHABLE and results[0]["min_deadline_seconds"] >= 2
    assert answer.json()["accepted"] == 3 and answer.json()["refused"] == 1
    assert [app.balance(u) for u in (late, plain, far, accepting)] == [1, 0, 0, 0]
    assert app.view(results[2]["task_id"])["deadline"] is not None
    assert app.view(results[1]["task_id"])["deadline"] is None


# The TypeScript client's submit with a deadline, run by Node against the app: its refusal's
# fields, then a late task accepted, as JSON on stdout.
TS_SCRIPT = """
const { GenqueueClient, GenqueueError } = await import(process.env.GQ_DIST);
const client = new GenqueueClient({ baseUrl: process.env.GQ_URL, token: process.env.GQ_TOKEN });
const person = Buffer.from(process.env.GQ_PHOTO, "base64");
const out = {};
try {
  await client.submit("photography", { person }, "", { userId: process.env.GQ_LATE, deadlineSeconds: 1 });
} catch (e) {
  if (!(e instanceof GenqueueError)) throw e;
  out.refused = { status: e.status, type: e.type, eta: e.etaSeconds, eta90: e.etaP90Seconds,
                  deadline: e.deadlineSeconds, min: e.minDeadlineSeconds };
}
const task = await client.submit("photography", { person }, "",
  { userId: process.env.GQ_ACCEPT, deadlineSeconds: 2.5, ifLate: "accept" });
out.view = await task.status();
console.log(JSON.stringify(out));
"""
DIST = Path(__file__).resolve().parents[2] / "serve_app" / "static" / "genqueue-client" / "genqueue-client.js"


def test_the_clients_send_a_deadline_and_read_its_409(app: Served) -> None:
    """The Python and TypeScript clients' submit takes `deadline_seconds`/`deadlineSeconds` and
    `if_late`/`ifLate`, and their 409 error carries the ETA and the shortest deadline."""
    app.crowd(2)
    late, accept, ts_late, ts_accept = app.users(4, credits=1)
    token = app.client.headers["Authorization"].removeprefix("Bearer ")
    photo = base64.b64decode(PNG)
    with Client(str(app.client.base_url), token) as client:
        with pytest.raises(DeadlineUnreachable) as refused:
            client.submit("photography", {"person": photo}, user_id=late, deadline_seconds=1)
        error = refused.value
        assert isinstance(error, Conflict) and error.status == 409 and error.deadline_seconds == 1
        assert error.eta_p90_seconds is not None and error.eta_seconds is not None
        assert error.min_deadline_seconds == math.ceil(error.eta_p90_seconds) > 1
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is DeadlineUnreachable and again.min_deadline_seconds == error.min_deadline_seconds
        task = client.submit(
            "photography", {"person": photo}, user_id=accept, deadline_seconds=1.5, if_late="accept"
        )
        assert counted_from_the_submit(task.status().raw, 1.5)
    assert (app.balance(late), app.balance(accept)) == (1, 0)
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node: the TypeScript client's part is not checked")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "GQ_DIST": DIST.as_uri(),
        "GQ_URL": str(app.client.base_url),
        "GQ_TOKEN": token,
        "GQ_PHOTO": PNG,
        "GQ_LATE": ts_late,
        "GQ_ACCEPT": ts_accept,
    }
    ran = subprocess.run(
        [node, "--input-type=module", "-e", TS_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["refused"]["status"] == 409 and out["refused"]["type"] == UNREACHABLE
    assert out["refused"]["deadline"] == 1 and out["refused"]["min"] == math.ceil(out["refused"]["eta90"])
    assert counted_from_the_submit(out["view"], 2.5)
    assert (app.balance(ts_late), app.balance(ts_accept)) == (1, 0)


# It times a call's start against a deadline: with whole clusters of other tests beside it on
# two cores, a call once started 3 s late, past the ETA's p90 and the margin.
@pytest.mark.serial
def test_a_task_accepted_with_a_deadline_starts_its_call_by_then(
    ray_session: None, store_url: str, tmp_path: Path
) -> None:
    """Real actors, two slots of 1 s calls, ten tasks queued: a 1 s deadline is refused with
    `min_deadline_seconds`; the same task with that deadline and a margin is accepted, and its
    upstream call starts by the deadline (it does not expire), after most of its ETA's p50.

    The margin (MARGIN_SECONDS): the shortest deadline is the ETA's p90, which one task in ten
    may miss, more often on a loaded machine (on 2 busy cores, 1 in 5 given exactly that
    deadline expired)."""
    config = resolve(make_config(store_url, str(tmp_path), slots=2, latency=1.0, jitter=0.2))
    factory.start(config)
    try:
        with served(config) as running, httpx.Client(base_url=running.url, timeout=30) as client:

            def batch(n: int) -> list[str]:
                answer = client.post("/v1/tasks/batch", json={"tasks": [task(f"w{i}") for i in range(n)]})
                assert answer.status_code == 200 and answer.json()["accepted"] == n, answer.text
                return [r["task_id"] for r in answer.json()["results"]]

            def ended(ids: list[str]) -> bool:
                return all(client.get(f"/v1/tasks/{t}").json()["status"] == "succeeded" for t in ids)

            # Calls measured first, as on a running instance: the ETA then knows their pace.
            warm = batch(4)
            eventually(lambda: ended(warm), timeout=30, what="the first calls")
            batch(10)
            refused = client.post("/v1/tasks", json=task("probe", deadline_seconds=1))
            assert refused.status_code == 409 and refused.json()["type"] == UNREACHABLE, refused.text
            deadline = refused.json()["min_deadline_seconds"] + MARGIN_SECONDS
            answer = client.post("/v1/tasks", json=task("probe", deadline_seconds=deadline))
            assert answer.status_code == 202, answer.text
            promised = answer.json()
            assert promised["eta_p90_seconds"] <= deadline

            def started() -> dict[str, Any] | None:
                view: dict[str, Any] = client.get(f"/v1/tasks/{promised['task_id']}").json()
                return view if view["started_at"] or view["status"] not in ("queued", "running") else None

            view = eventually(started, timeout=deadline + 15, interval=0.1, what="the probe's call started")
            assert view is not None and view["status"] != "expired" and view["started_at"], view
            waited = view["started_at"] - view["submitted_at"]
            print(
                f"min deadline {refused.json()['min_deadline_seconds']} s, p50/p90 "
                f"{promised['eta_seconds']}/{promised['eta_p90_seconds']} s, started after {waited:.2f} s"
            )
            assert view["started_at"] <= view["deadline"], view
            assert waited >= promised["eta_seconds"] / 2, (waited, promised)
    finally:
        factory.stop(config)
