"""Every consumer of a task's status knows `expired`: the task list's filter, the clients' terminal
statuses (Python, and TypeScript as written and as built), the clients' watch and result, the
load test report and `genqueue top`."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import get_args

import genqueue_client
import httpx
import pytest
from genqueue_client import Client
from genqueue_client import errors as client_errors
from rich.console import Console

from events.catalogue import EXPIRED, TERMINAL
from events.ops_models import STATUSES
from serve_app.cli import top
from serve_app.cli.loadreport import UserRun, summarise
from serve_app.http import problems, task_list
from serve_app.http.tasks import task_result
from tests.unit.test_python_client_watch import WATCHES, Server, Watch, message

ROOT = Path(__file__).resolve().parents[2]


def ts_terminal(path: Path) -> set[str]:
    """The statuses in the `TERMINAL` array of a TypeScript or built JavaScript module."""
    found = re.search(r"TERMINAL\b[^=]*=\s*\[([^\]]*)\]", path.read_text())
    assert found, path
    return set(re.findall(r'"(\w+)"', found.group(1)))


def test_every_status_list_is_the_catalogues() -> None:
    """The list filter takes every status; both clients end on exactly the terminal ones."""
    assert set(get_args(task_list.Status)) == set(task_list._STATUS_INDEXES) == set(STATUSES)
    assert genqueue_client.TERMINAL == TERMINAL and EXPIRED in TERMINAL
    assert ts_terminal(ROOT / "clients/typescript/src/types.ts") == TERMINAL
    # The page imports the built module: `make client` must have run since the source changed.
    assert ts_terminal(ROOT / "serve_app/static/genqueue-client/types.js") == TERMINAL


@pytest.mark.parametrize("watch", WATCHES, ids=["sync", "async"])
def test_a_watch_ends_at_the_expired_update(watch: Watch) -> None:
    """An expired update is the last the watch yields, whatever the stream sends after it."""
    server = Server(
        ([message("2-3-waiting", "queued", 3), message("3", "expired"), message("4", "queued")], False)
    )
    updates = watch(server)
    assert [u.view.status for u in updates] == ["queued", "expired"] and updates[-1].ended


def test_the_result_of_an_expired_task_is_a_conflict_that_says_so() -> None:
    """The result route refuses an expired task with a 409 naming the deadline and the refund, and
    the client raises it as its Conflict with that detail."""
    with pytest.raises(problems.Conflict) as refused:
        asyncio.run(task_result("t1", None, {"status": EXPIRED}))  # type: ignore[arg-type]
    rendered = problems.respond(refused.value, "/v1/tasks/t1/result")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            rendered.status_code, headers=list(rendered.headers.items()), content=bytes(rendered.body)
        )

    transport = httpx.MockTransport(answer)
    with (
        Client("http://genqueue.test", transport=transport) as client,
        pytest.raises(client_errors.Conflict) as raised,
    ):
        client.task("t1").result()
    assert "expired" in raised.value.detail and "deadline" in raised.value.detail
    assert "refunded" in raised.value.detail


def test_the_load_report_names_expired_tasks_beside_failures() -> None:
    """An expired task gave no image: the report counts it as its own cause."""
    view = {"status": EXPIRED, "submitted_at": 100.0, "finished_at": 103.0, "error": "deadline passed"}
    runs = [UserRun(0, "photography", task_id="t0", view=view)]
    report = summarise(runs, "photography", 0.0, None)
    assert report.succeeded == 0 and report.failures == {"expired": 1}


def test_top_counts_expired_tasks_beside_cancelled() -> None:
    """The dashboard's `ended` row names expired tasks."""
    queue = {
        "waiting": 0,
        "running": 0,
        "slots": 4,
        "throughput_bound_per_second": 1.0,
        "succeeded": 5,
        "failed": 1,
        "cancelled": 2,
        "expired": 3,
        "pools": [],
        "alerts": [],
    }
    console = Console(record=True, width=200)
    console.print(top.render(top.Frame(queue, [], 0.0), None))
    assert "succeeded 5, failed 1, cancelled 2, expired 3" in console.export_text()
