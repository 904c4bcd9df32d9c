"""The front door's cheap parts: the ingress deployment's options, blob writes fit for the event loop,
and the Redis client's C parser."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import redis.asyncio.connection
import redis.connection
import redis.utils

from actors.blobs import BlobStore, task_blob
from actors.config import ConfigError, parse
from serve_app import ingress


def test_the_ingress_takes_its_replicas_and_cpu_share_from_the_config_and_logs_no_access_line() -> None:
    """`[server] replicas` and `replica_cpus` shape the deployment; Serve writes no access log line."""
    config = parse({"server": {"replicas": 3, "replica_cpus": 0.25}}, {})
    deployment = ingress.build(config, config.server.replicas)._bound_deployment
    assert deployment.num_replicas == 3
    assert deployment.ray_actor_options["num_cpus"] == 0.25
    assert deployment.logging_config["enable_access_log"] is False
    assert deployment.logging_config["log_level"] == "INFO"  # genqueue's own lines still pass
    assert parse({}, {}).server.replica_cpus == 0.1
    assert parse({}, {"GENQUEUE_SERVER_REPLICA_CPUS": "0"}).server.replica_cpus == 0.0


@pytest.mark.parametrize("cpus", [-1, 0.00001, 5000])
def test_a_replica_cpu_share_ray_cannot_reserve_is_refused(cpus: float) -> None:
    """Negative, finer than Ray's 0.0001, or absurdly large shares are a config error."""
    with pytest.raises(ConfigError, match=r"server\.replica_cpus"):
        parse({"server": {"replica_cpus": cpus}}, {})


def test_local_blob_writes_are_inline_and_make_a_folder_once_per_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a local directory writes may run on the event loop: a task's inputs make its folder once,
    its result (in the folder that exists) makes none; an object store's writes stay off the loop."""
    blobs = BlobStore(f"file://{tmp_path}/blobs")
    blobs.put(task_blob("first", "person.png"), b"p")  # the tasks/ folder exists from now on
    made: list[str] = []
    mkdir = os.mkdir

    def counted(path: str, *args: int, **kwargs: int) -> None:
        made.append(str(path))
        mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", counted)
    blobs.put_many({task_blob("t", "person.png"): b"p", task_blob("t", "garment.png"): b"g"})
    assert len(made) == 1
    blobs.put(task_blob("t", "result-1.png"), b"r")
    assert len(made) == 1
    assert blobs.get(task_blob("t", "garment.png")) == b"g"
    assert blobs.get(task_blob("t", "result-1.png")) == b"r"
    assert blobs.inline_writes and not BlobStore("memory://genqueue-inline").inline_writes


def test_the_redis_client_parses_replies_in_c() -> None:
    """hiredis is installed, so redis-py's connections (the store's async ones and the actors'
    blocking ones) parse replies with it."""
    assert redis.utils.HIREDIS_AVAILABLE
    assert redis.asyncio.connection.DefaultParser.__name__ == "_AsyncHiredisParser"
    assert redis.connection.DefaultParser.__name__ == "_HiredisParser"


@pytest.mark.parametrize("url", ["file://{tmp}/blobs", "memory://genqueue-async-{name}"])
def test_blobs_are_written_and_read_from_an_event_loop_on_either_store(tmp_path: Path, url: str) -> None:
    """`write` and `read` store and fetch blobs from a coroutine, on a directory or an object store."""
    blobs = BlobStore(url.format(tmp=tmp_path, name=tmp_path.name))
    ref = task_blob("async", "person.png")

    async def main() -> bytes:
        await blobs.write({ref: b"image"})
        return await blobs.read(ref)

    assert asyncio.run(main()) == b"image"
