"""A two-node local Ray cluster loses the node that runs the workers mid-burst."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).with_name("two_node_scenario.py")


def test_worker_node_removed_mid_burst() -> None:
    """With its own Ray (a separate process), every task ends exactly once after the worker node goes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    done = subprocess.run(
        [sys.executable, str(SCENARIO)], capture_output=True, text=True, timeout=400, env=env, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert done.returncode == 0, result
    assert result["workers_on_head"] is False
    assert result["submitted"] == 24 and result["ended"] == {"succeeded": 24}
    assert result["never_ended"] == result["ended_twice"] == result["overlapping"] == 0
