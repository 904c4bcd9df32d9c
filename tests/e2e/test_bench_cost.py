"""The cost benchmark's measuring parts against a real Valkey: command counts and the yardstick."""

from __future__ import annotations

import shutil

import pytest
import redis

from bench.cost_engine import bare_uvicorn
from bench.cost_probe import commands_per_task, valkey_commands
from bench.cost_wrk import closed_loop
from bench.cost_yardstick import STREAM


def test_commands_per_task_are_the_server_counts_between_two_readings(store_url: str) -> None:
    """Ten XADDs and five HSETs over five tasks are 2 and 1 per task; the bench's INFO is left out."""
    before = valkey_commands(store_url)
    with redis.Redis.from_url(store_url) as client:
        for i in range(10):
            client.xadd("bench-cost-test", {"i": i})
        for i in range(5):
            client.hset("bench-cost-test-h", str(i), i)
    figures = commands_per_task(before, valkey_commands(store_url), 5)
    assert figures["by_command"] == {"xadd": 2.0, "hset": 1.0}
    assert figures["commands_per_task"] == 3.0
    assert figures["round_trips_per_task"] >= 3.0  # one read per command sent alone, and the INFOs


def test_the_yardstick_on_bare_uvicorn_appends_one_entry_per_202(store_url: str) -> None:
    """The closed loop's 202s are the yardstick's XADDs: every answered request wrote one entry."""
    with redis.Redis.from_url(store_url) as client, bare_uvicorn(store_url, nice=0) as url:
        start = client.xlen(STREAM)  # after the readiness probe's own entry
        load = closed_loop(url, "/v1/tasks", [""], b'{"kind":"photography"}', 4, 1.0, tool="python")
        written = client.xlen(STREAM) - start
    assert load.tool == "aiohttp" and load.accepted > 0 and load.errors == 0
    assert written == load.accepted
    assert 0 < load.p50_ms <= load.p99_ms


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_counts_every_status_across_its_threads(store_url: str) -> None:
    """wrk's Lua script sums each thread's statuses: its 202s are the entries the yardstick wrote."""
    with redis.Redis.from_url(store_url) as client, bare_uvicorn(store_url, nice=0) as url:
        start = client.xlen(STREAM)
        load = closed_loop(url, "/v1/tasks", ["a", "b"], b"{}", 4, 1.0, tool="wrk")
        written = client.xlen(STREAM) - start
    assert load.tool == "wrk" and load.accepted > 0 and set(load.statuses) == {202}
    # wrk stops counting at its deadline; requests still in flight then are written, not counted.
    assert load.accepted <= written <= load.accepted + 4
