"""The local Ray genqueue starts runs with genqueue's defaults for Ray and Serve."""

from __future__ import annotations

import os

import ray


@ray.remote(num_cpus=0)
def _serve_settings() -> tuple[float, str | None]:
    from ray.serve._private import constants

    return constants.CONTROL_LOOP_INTERVAL_S, os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS")


def test_a_process_of_the_local_ray_reads_genqueues_serve_defaults(ray_session: None) -> None:
    """Serve's controller loop steps every 0.5 s, not its 0.1 s default, and direct ingress is on."""
    assert ray.get(_serve_settings.remote(), timeout=60) == (0.5, "1")
