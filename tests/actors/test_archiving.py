"""The janitor archives and trims the log on its own, and forgets finished tasks, on real actors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import ray

from actors import factory
from actors.archiving import archive_of
from actors.config import Config, RetentionConfig
from events.catalogue import stream_id_key
from serve_app.runtime import resolve
from tests.actors.conftest import Cluster
from tests.helpers import eventually, make_config, with_store


@pytest.fixture
def short_log(ray_session: None, store_url: str, data_dir: str) -> Iterator[Cluster]:
    """Actors whose events leave Redis a second after both actors' snapshots cover them, and
    whose finished tasks are forgotten a second after they end; a pass every 0.3 s."""
    base = make_config(store_url, data_dir)
    retention = RetentionConfig(live_seconds=1.0, task_seconds=1.0, every_seconds=0.3)
    config: Config = resolve(replace(base, retention=retention))
    cluster = Cluster(config, factory.start(config))
    yield cluster
    factory.stop(config)


def test_the_janitor_archives_trims_and_forgets(short_log: Cluster) -> None:
    """Six tasks end; once both actors snapshotted past them, their events are in archive segments
    that open whole, gone from the stream, and their views are forgotten."""
    cluster = short_log
    ids = cluster.submit(6)
    eventually(lambda: cluster.succeeded() == 6, timeout=60, what="6 succeeded")
    first = cluster.log()[0].id

    def log_state() -> dict[str, str]:
        return with_store(cluster.config, lambda store: store.log_state())

    def keypool_snapshot() -> bool:
        # Traffic goes on: the key pool snapshots on its own cadence only while it grants.
        cluster.submit(1)
        return bool(log_state().get("snapshot:keypool"))

    eventually(keypool_snapshot, timeout=40, interval=1.0, what="a key pool snapshot")
    ray.get(cluster.handles["queue"].take_snapshot.remote(), timeout=60)

    def archived() -> bool:
        views = cluster.views(ids)
        log = cluster.log()
        return not any(views.values()) and stream_id_key(log[0].id) > stream_id_key(first)

    eventually(archived, timeout=30, what="the first tasks archived, trimmed and forgotten")
    archive = archive_of(cluster.config)
    segments = archive.segments()
    held = [e for s in segments for e in archive.open(s).entries]
    assert held[0][0] == first
    assert set(ids) <= {fields[5] for _, fields in held if fields[1] == "task.submitted"}
    assert stream_id_key(log_state()["archived_to"]) >= stream_id_key(segments[-1].last)

    def counted() -> dict[str, Any] | None:
        # The janitor adds a pass's figures to its totals when the pass ends, after the forgetting.
        figures: dict[str, Any] = ray.get(cluster.handles["janitor"].archiving.remote(), timeout=30)
        return figures if figures["segments"] >= len(segments) else None

    figures = eventually(counted, timeout=30, what="the pass that archived them counted")
    assert figures["events"] >= len(held)
    assert figures["forgotten"] >= 6 and figures["last_error"] == ""
