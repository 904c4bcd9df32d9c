"""The load test's summary: rejections by reason, percentiles on the server's clock, failures by
cause, and the bound from what `/v1/queue` says."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from serve_app.cli.loadreport import UserRun, arrival_offsets, bound_from_queue, render, summarise


def done(i: int, submitted: float, started: float, finished: float, status: str = "succeeded") -> UserRun:
    """A user whose task ran from `started` to `finished`, seen to end 0.1 s later."""
    view = {
        "status": status,
        "submitted_at": submitted,
        "dispatched_at": started - 0.5,
        "started_at": started,
        "finished_at": finished,
        "error": "503 UNAVAILABLE: overloaded" if status == "failed" else None,
    }
    return UserRun(
        i,
        "photography",
        pressed=submitted - 0.05,
        submit_seconds=0.05,
        status=202,
        task_id=f"t{i}",
        view=view,
        seen_end=finished + 0.1,
        followed_by="sse",
    )


def queue(slots: int = 2, latency: float = 1.0, pools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A `/v1/queue` answer with one pool of 2 calls per 10 s window."""
    return {
        "slots": slots,
        "mean_latency_seconds": latency,
        "throughput_bound_per_second": 0.2,
        "pools": pools
        if pools is not None
        else [{"name": "a", "state": "ok", "learned_rpm": 12, "window_seconds": 10.0}],
    }


def test_rejections_are_counted_by_reason_and_waits_come_from_server_stamps() -> None:
    """Two refusals with one reason and one without an answer; waits are started - submitted."""
    runs = [
        done(0, 100.0, 100.0, 101.0),
        done(1, 100.0, 100.5, 101.5),
        done(2, 100.2, 110.0, 111.0),
        UserRun(
            3, "fitting", pressed=99.9, submit_seconds=0.01, status=402, reason="402 Insufficient credits"
        ),
        UserRun(
            4, "fitting", pressed=99.9, submit_seconds=0.02, status=402, reason="402 Insufficient credits"
        ),
        UserRun(5, "fitting", pressed=99.9, reason="no answer: ServerDisconnectedError"),
    ]
    report = summarise(runs, "mixed", 0.0, None)
    assert report.accepted == 3 and report.succeeded == 3
    assert report.rejected == {"402 Insufficient credits": 2, "no answer: ServerDisconnectedError": 1}
    assert (report.wait_p50_s, report.wait_p99_s) == (0.5, 9.8)
    assert report.makespan_s == 11.0  # first acceptance (100.0) to last end (111.0)
    assert report.time_to_image_p99_s == pytest.approx(111.1 - 100.15)
    assert (report.call_mean_s, report.hold_p50_s) == (1.0, 1.5)
    assert report.submit_p99_ms == 50.0  # the answered submits only, refusals included
    assert report.bound is None and report.efficiency is None
    assert arrival_offsets(runs) == pytest.approx([0.0, 0.0, 0.2])


def test_failures_are_named_by_cause_including_tasks_that_never_ended() -> None:
    """A failed task gives its error, an unfinished one its last status."""
    stuck = UserRun(2, "photography", submit_seconds=0.1, status=202, task_id="t2", view={"status": "queued"})
    runs = [done(0, 1.0, 1.0, 2.0), done(1, 1.0, 1.0, 2.0, status="failed"), stuck]
    report = summarise(runs, "photography", 0.0, None)
    assert report.failures == {"failed: 503 UNAVAILABLE: overloaded": 1, "unfinished (queued)": 1}
    assert report.succeeded == 1 and report.followed == {"sse": 2}


def test_the_bound_simulates_the_windows_for_a_burst() -> None:
    """Five users, 2 slots, 1 s calls, 2 calls per 10 s: starts at 0, 0, 10, 10, 20; makespan 21 s."""
    bound = bound_from_queue(queue(), [0.0] * 5)
    assert bound is not None and bound.how == "windows" and bound.seconds == 21.0
    runs = [done(i, 0.0, 0.0, 1.0) for i in range(4)] + [done(4, 0.0, 20.0, 21.0)]
    report = summarise(runs, "photography", 0.0, queue())
    assert report.bound == bound and report.efficiency == 1.0
    console = Console(width=200, record=True)
    console.print(render(report))
    text = console.export_text()
    assert "efficiency" in text and "1.000 (bound / makespan)" in text


def test_the_bound_falls_back_to_the_rate_and_ignores_pools_that_cannot_serve() -> None:
    """Pools with different windows: N / throughput + latency; a parked pool does not count."""
    pools = [
        {"name": "a", "state": "ok", "learned_rpm": 12, "window_seconds": 10.0},
        {"name": "b", "state": "ok", "learned_rpm": 12, "window_seconds": 60.0},
        {"name": "c", "state": "parked", "learned_rpm": 6000, "window_seconds": 1.0},
    ]
    bound = bound_from_queue(queue(pools=pools), [0.0] * 4)
    assert bound is not None and bound.how == "rate" and bound.seconds == pytest.approx(4 / 0.2 + 1.0)
    assert bound_from_queue(queue(pools=[pools[2]]), [0.0]) is None
