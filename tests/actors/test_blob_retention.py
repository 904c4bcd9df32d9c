"""The janitor actor deletes finished tasks' blobs after the configured retention."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from actors import factory
from actors.config import Config, StorageConfig
from events.catalogue import BlobsExpired
from serve_app.runtime import resolve
from tests.actors.conftest import Cluster
from tests.helpers import eventually, make_config


@pytest.fixture
def short_retention(ray_session: None, store_url: str, data_dir: str) -> Iterator[Cluster]:
    """Actors whose blobs are kept half a second after their task ends, swept every 0.2 s."""
    base = make_config(store_url, data_dir)
    config: Config = resolve(replace(base, storage=StorageConfig(retention_seconds=0.5, sweep_seconds=0.2)))
    cluster = Cluster(config, factory.start(config))
    yield cluster
    factory.stop(config)


def test_results_expire_with_one_event_each(short_retention: Cluster) -> None:
    """Six tasks succeed, then each loses its result blob, announced by one blobs.expired event."""
    cluster = short_retention
    ids = cluster.submit(6)
    eventually(lambda: cluster.succeeded() == 6, timeout=60, what="6 succeeded")

    def expired() -> set[str]:
        return {s.event.task_id for s in cluster.log() if isinstance(s.event, BlobsExpired)}

    # The event goes first and the files follow it: wait for both.
    eventually(lambda: expired() == set(ids), timeout=30, what="every task's blobs expired")
    eventually(
        lambda: not set(ids) & set(cluster.blobs.task_ids()), timeout=30, what="every task's blobs deleted"
    )
    assert sum(isinstance(s.event, BlobsExpired) for s in cluster.log()) == 6
