"""Shared fixtures: one embedded Valkey and one local Ray for the whole run."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.secure_valkey import SecureValkey


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded Valkey server (the project's default store) for the session."""
    from serve_app.valkey import embedded_valkey

    with embedded_valkey(tmp_path_factory.mktemp("valkey")) as url:
        yield url


@pytest.fixture(scope="session")
def secure_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureValkey]:
    """A Valkey with `requirepass`, an ACL user held to genqueue's keys, and TLS in front."""
    from tests.secure_valkey import secure_valkey

    with secure_valkey(tmp_path_factory.mktemp("secure-valkey")) as server:
        yield server


EXTERNAL_REDIS = os.environ.get("GENQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def external_redis_available() -> bool:
    """Whether the optional external Redis for the contract suite answers."""
    host_port = EXTERNAL_REDIS.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    return _reachable(host or "127.0.0.1", int(port or 6379))


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for every actor and end-to-end test."""
    import ray

    from serve_app.runtime import ray_environment

    ray_environment()
    # Each module's genqueue stops its Serve app at the end, and a replica drains for this long
    # first (genqueue's own 2 s gives HAProxy time to stop routing to it; no test sends while
    # its module stops). The local Ray's processes take it from here; set only around their
    # start, so that the `genqueue up`s some tests start keep genqueue's default.
    # Serve's controller steps at its own default of 0.1 s here, not genqueue's 0.5 s: each
    # module's Serve app then stops about a second sooner.
    quicker = {
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0.1",
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1",
    }
    # Only these names are put back afterwards: ray.init sets variables of its own that the
    # processes the tests start need (a whole-environment restore would drop them).
    with pytest.MonkeyPatch.context() as env:
        for name, value in quicker.items():
            env.setenv(name, value)
        ray.init(
            # "local": a Ray of our own, even when another cluster runs on this machine
            # (a `ray start` cluster would otherwise be joined).
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 1024 * 1024,
            logging_level="WARNING",
            log_to_driver=False,
        )
    yield
    ray.shutdown()


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    """A data directory for blobs."""
    return str(tmp_path / "data")


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1, outside the range outgoing connections take, and
    in this test worker's own share of that range: a port one worker picks and binds a moment
    later is never the pick of the other (`make test` runs two)."""
    from serve_app.ports import PICK_RANGE
    from serve_app.ports import free_port as pick

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker[2:]) % count if worker[2:].isdigit() else 0
    share = len(PICK_RANGE) // count
    return pick("127.0.0.1", range(PICK_RANGE.start + index * share, PICK_RANGE.start + (index + 1) * share))


# Modules that take longest (seconds on 2 cores, two at a time, their setup included, from one
# run's durations). `make test` hands modules to its two workers in collection order, so these
# go first: a long module picked up last would leave the other worker idle until it ends.
HEAVY_MODULES = {
    "tests/actors/test_actors.py": 87,
    "tests/e2e/test_pages.py": 86,
    "tests/actors/test_multinode.py": 82,
    "tests/e2e/test_startup.py": 77,
    "tests/e2e/test_process_restart.py": 66,
    "tests/actors/test_upstream.py": 57,
    "tests/e2e/test_deployment_security.py": 46,
    "tests/e2e/test_clients.py": 45,
    "tests/actors/test_faults.py": 40,
    "tests/e2e/test_http.py": 39,
    "tests/e2e/test_api_guard.py": 38,
    "tests/e2e/test_gemini_burst.py": 31,
    "tests/e2e/test_hostile.py": 29,
    "tests/e2e/test_access.py": 28,
    "tests/actors/test_archive_replay.py": 27,
    "tests/actors/test_deadlines.py": 23,
    "tests/e2e/test_refunds.py": 23,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heaviest modules first (a stable sort: every other test keeps its place and order)."""
    root = Path(__file__).resolve().parents[1]

    def weight(item: pytest.Item) -> int:
        try:
            return -HEAVY_MODULES.get(str(item.path.relative_to(root)), 0)
        except ValueError:
            return 0

    items.sort(key=weight)
