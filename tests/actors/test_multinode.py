"""genqueue on a multi-node Ray cluster made with `ray start`: a node dies mid-burst."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).with_name("multinode_scenario.py")


def test_a_burst_survives_its_worker_node_on_a_ray_start_cluster() -> None:
    """Head and worker node from `ray start`, `genqueue up --address`, workers on the worker
    node (they hold its resource); the node is killed after a third of the burst and a
    replacement joins: every task succeeds exactly once."""
    run = subprocess.run(
        [sys.executable, str(SCENARIO)], capture_output=True, text=True, timeout=600, check=False
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, run.stdout[-2000:] + run.stderr[-3000:]
    figures = json.loads(lines[-1])
    print(figures)
    assert figures["workers_on_worker_node"] == 2.0  # both workers hold the worker node's resource
    # Queue, key pool, janitor and the Serve replica each hold 0.1 of the head's resource.
    assert figures["head_resource_in_use"] >= 0.4
    assert figures["succeeded_before_kill"] < figures["tasks"]
    assert (figures["succeeded"], figures["lost"], figures["ended_twice"]) == (figures["tasks"], 0, 0)
    assert figures["violations"] == [] and run.returncode == 0
