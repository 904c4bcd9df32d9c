"""genqueue's defaults for Ray reach Ray Serve before it reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

READ = (
    "from serve_app.runtime import ray_environment\n"
    "ray_environment()\n"
    "from ray.serve._private import constants\n"
    "print(constants.CONTROL_LOOP_INTERVAL_S, constants.RAY_SERVE_ENABLE_DIRECT_INGRESS,"
    " constants.RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD, constants.RAY_SERVE_HAPROXY_METRICS_ENABLED)\n"
)


def test_in_a_fresh_process_serve_reads_genqueues_control_loop_interval_and_direct_ingress() -> None:
    """With none of Ray's variables set, Serve's controller steps every 0.5 s (its own default
    is 0.1 s), direct ingress is on and a replica runs the handlers on its HTTP server's loop
    (Serve's default: a second loop in a thread), and its HAProxy sends no line per request for
    Ray's manager actor to parse (HAProxy's own exporter counts them), as a Ray started after
    `ray_environment()` inherits."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    read = subprocess.run(
        [sys.executable, "-c", READ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert read.stdout.split() == ["0.5", "True", "False", "False"]
