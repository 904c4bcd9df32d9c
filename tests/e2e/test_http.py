"""End to end over HTTP: Ray Serve ingress, actors, embedded Valkey, offline provider."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from actors.audit import audit
from events.redis_store import RedisEventStore
from serve_app.cli.burst import payload
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.helpers import eventually, make_config

SLOTS = 6


@pytest.fixture(scope="module")
def live(ray_session: None, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One genqueue behind Ray Serve for this module."""
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("e2e")),
        slots=SLOTS,
        latency=0.2,
        jitter=0.1,
        pools=(("p1", 600, 1.0), ("p2", 600, 1.0)),
        port=free_port(),
        render=True,  # the portraits are rendered: the burst's images are checked
    )
    with running(config, dashboard=False) as r:
        yield r


def log_of(live: Running) -> list:  # type: ignore[type-arg]
    async def main() -> list:  # type: ignore[type-arg]
        store = RedisEventStore.from_url(live.config.redis.url, live.config.redis.namespace)
        try:
            return await store.read_range()
        finally:
            await store.close()

    return asyncio.run(main())


def test_sixty_simultaneous_submits_all_finish_with_images(live: Running) -> None:
    """60 users at once: every submit is accepted, every task succeeds, the log stays within slots."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.api_url, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/tasks", json=payload(i, "fitting" if i % 2 else "photography"))
                    for i in range(60)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [202] * 60
    ids = [r.json()["task_id"] for r in responses]
    assert all(r.headers["location"] == f"/v1/tasks/{t}" for r, t in zip(responses, ids, strict=True))
    assert all(isinstance(r.json()["position"], int) for r in responses)

    with httpx.Client(base_url=live.api_url, timeout=30) as client:

        def all_done() -> bool:
            return client.get("/v1/queue").json()["succeeded"] >= 60

        eventually(all_done, timeout=120, interval=0.25, what="60 tasks succeeded")
        views = [client.get(f"/v1/tasks/{t}").json() for t in ids]
        assert {v["status"] for v in views} == {"succeeded"}
        image = client.get(views[0]["result_url"])
        assert image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (768, 1024)
        trail = client.get(f"/v1/tasks/{ids[1]}/events").json()["events"]
        assert [e["type"] for e in trail] == [
            "task.submitted",
            "task.dispatched",
            "key.token_granted",
            "task.started",
            "task.succeeded",
        ]
    report = audit(log_of(live))
    assert report.ok and report.ended.get("succeeded", 0) >= 60
    assert report.max_running <= SLOTS


def image_b64(fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


BAD_REQUESTS = [
    ("malformed json", b"{not json", 400, "body"),
    ("wrong kind", {"kind": "video", "images": {"person": image_b64()}}, 422, "kind"),
    (
        "unknown field",
        {"kind": "photography", "images": {"person": image_b64()}, "colour": 1},
        422,
        "colour",
    ),
    (
        "wrong type",
        {"kind": "photography", "prompt": 5, "images": {"person": image_b64()}},
        422,
        "prompt",
    ),
    ("missing person", {"kind": "photography", "images": {}}, 422, "images.person"),
    (
        "fitting without garment",
        {"kind": "fitting", "images": {"person": image_b64()}},
        422,
        "images.garment",
    ),
    ("bad base64", {"kind": "photography", "images": {"person": "@@@"}}, 422, "images.person"),
    (
        "not an image",
        {"kind": "photography", "images": {"person": base64.b64encode(b"hello").decode()}},
        422,
        "images.person",
    ),
    ("gif", {"kind": "photography", "images": {"person": image_b64("GIF")}}, 422, "images.person"),
    (
        "prompt too long",
        {"kind": "photography", "prompt": "x" * 2001, "images": {"person": image_b64()}},
        422,
        "prompt",
    ),
    ("array body", [1, 2], 422, "body"),
]


@pytest.mark.parametrize(("name", "body", "status", "field"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_problem_that_names_the_field(
    live: Running, name: str, body: object, status: int, field: str
) -> None:
    """Every malformed submit is a 4xx application/problem+json naming the field, never a 500."""
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        if isinstance(body, bytes):
            r = client.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
        else:
            r = client.post("/v1/tasks", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status and problem["title"] and problem["instance"] == "/v1/tasks"
    named = [e["field"] for e in problem.get("errors", [])] + [problem["detail"]]
    assert any(field in n for n in named), problem


def test_unknown_and_malformed_task_ids(live: Running) -> None:
    """An unknown task is a 404 problem; a malformed id is a 422 problem."""
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        missing = client.get("/v1/tasks/" + "0" * 32)
        assert missing.status_code == 404 and missing.json()["status"] == 404
        assert client.get("/v1/tasks/" + "0" * 32 + "/result").status_code == 404
        malformed = client.get("/v1/tasks/../../etc/passwd")
        assert malformed.status_code in (404, 422)
        assert client.get("/v1/tasks/not-an-id").status_code == 422


def test_health_readiness_docs_and_queue(live: Running) -> None:
    """healthz and readyz answer, the OpenAPI docs are served, the queue overview has its fields."""
    with httpx.Client(base_url=live.api_url, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["actors"] is True
        assert client.get("/docs").status_code == 200
        assert "/v1/tasks" in client.get("/openapi.json").json()["paths"]
        q = client.get("/v1/queue").json()
        assert q["slots"] == SLOTS and {p["name"] for p in q["pools"]} == {"p1", "p2"}
        assert all(p["capacity"] == 10 for p in q["pools"])


def read_sse(
    client: httpx.Client, path: str, headers: dict[str, str] | None = None, limit: int = 1000
) -> list[dict]:  # type: ignore[type-arg]
    """Read a Server-Sent-Events stream to its end (or `limit` messages) as {id, event, data} dicts."""
    messages: list[dict] = []  # type: ignore[type-arg]
    current: dict = {}  # type: ignore[type-arg]
    with client.stream("GET", path, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    messages.append(current)
                    if len(messages) >= limit:
                        break
                current = {}
                continue
            name, _, value = line.partition(":")
            current[name] = value.strip()
    for message in messages:
        message["data"] = json.loads(message["data"])
    return messages


def test_watch_streams_every_change_and_resumes_after_a_reconnect(live: Running) -> None:
    """SSE: queued with a falling position while waiting, then running, then succeeded; a
    reconnect resumes."""

    async def ahead() -> None:  # at once, so a queue forms however slow the machine is
        async with httpx.AsyncClient(base_url=live.api_url, timeout=60) as client:
            rs = await asyncio.gather(
                *(client.post("/v1/tasks", json=payload(i, "photography")) for i in range(40))
            )
            assert {r.status_code for r in rs} == {202}

    asyncio.run(ahead())
    with httpx.Client(base_url=live.api_url, timeout=60) as client:
        last = client.post("/v1/tasks", json=payload(99, "photography")).json()["task_id"]
        first_two = read_sse(client, f"/v1/tasks/{last}/watch", limit=2)
        rest = read_sse(client, f"/v1/tasks/{last}/watch", headers={"Last-Event-ID": first_two[-1]["id"]})
        assert rest[0]["id"] != first_two[-1]["id"]
        messages = first_two + rest
        statuses = [m["data"]["status"] for m in messages]
        assert statuses[-1] == "succeeded" and "running" in statuses
        assert statuses.index("running") > statuses.index("queued")
        waiting = [m["data"] for m in messages if m["data"]["stage"] == "waiting"]
        positions = [v["position"] for v in waiting]
        assert positions == sorted(positions, reverse=True) and len(set(positions)) >= 2
        assert {m["event"] for m in messages} == {"task"}
        assert set(messages[-1]["data"]) == set(client.get(f"/v1/tasks/{last}").json())
        done = read_sse(client, f"/v1/tasks/{last}/watch")
        assert [m["data"]["status"] for m in done] == ["succeeded"]
        assert client.get(f"/v1/tasks/{'0' * 32}/watch").status_code == 404


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse /metrics with prometheus_client's parser into {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_move_with_a_burst(live: Running) -> None:
    """Totals, upstream calls and both histograms grow by the burst; gauges stay within their bounds."""
    with httpx.Client(base_url=live.api_url, timeout=60) as client:

        def idle() -> bool:  # no task of an earlier test may end inside this one's counts
            q = client.get("/v1/queue").json()
            return q["waiting"] + q["starting"] + q["running"] == 0

        eventually(idle, timeout=60, interval=0.25, what="the queue idle")
        before = scrape(client)
        kinds = ["photography", "fitting"] * 6
        for i, kind in enumerate(kinds):
            assert client.post("/v1/tasks", json=payload(100 + i, kind)).status_code == 202

        def completed(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
            return sum(v for (name, _), v in m.items() if name == "genqueue_tasks_completed_total")

        target = completed(before) + 12

        def burst_done() -> bool:
            return completed(scrape(client)) >= target

        eventually(burst_done, timeout=60, interval=0.25, what="the burst completed")
        after = scrape(client)

    def grew(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert grew("genqueue_tasks_submitted_total", (("kind", "photography"),)) == 6
    assert grew("genqueue_tasks_submitted_total", (("kind", "fitting"),)) == 6
    assert grew("genqueue_tasks_completed_total", (("kind", "photography"), ("outcome", "succeeded"))) == 6
    calls = sum(grew("genqueue_upstream_calls_total", (("code", "200"), ("pool", p))) for p in ("p1", "p2"))
    assert calls == 12
    assert grew("genqueue_queue_wait_seconds_count") == 12
    assert grew("genqueue_processing_seconds_count") == 12
    assert grew("genqueue_processing_seconds_sum") > 12 * 0.05
    assert grew("genqueue_processing_seconds_bucket", (("le", "+Inf"),)) == 12
    assert after[("genqueue_slots", ())] == SLOTS
    for pool in ("p1", "p2"):
        assert after[("genqueue_pool_capacity", (("pool", pool),))] == 10
        assert 0 <= after[("genqueue_pool_tokens_available", (("pool", pool),))] <= 10


def test_top_prints_a_frame_of_the_running_instance(live: Running) -> None:
    """genqueue top --once shows the queue, the pools and the alerts of a live instance."""
    from typer.testing import CliRunner

    from serve_app.cli.main import app

    result = CliRunner().invoke(app, ["top", live.api_url, "--once"])
    assert result.exit_code == 0, result.output
    for text in ("waiting", f"/ {SLOTS} slots", "wait p50 / p99", "p1", "p2", "alerts"):
        assert text in result.output
    unreachable = CliRunner().invoke(app, ["top", "http://127.0.0.1:9", "--once"])
    assert unreachable.exit_code == 1 and "cannot reach genqueue" in unreachable.output
